// Hot loops of batched replay (cpp/tape.cpp), compiled for the x86-64 baseline (SSE2) and, where the
// CPU has it, for AVX2, chosen once at run time so that one wheel runs everywhere. Every target does
// the same multiplications and additions in the same order (no FMA contraction: -ffp-contract=off),
// so the bits do not depend on the target; ARENAGRAD_SIMD=baseline in the environment forces the
// baseline, which the tests use to check exactly that.
#pragma once

#include <cstddef>

namespace arenagrad::kernels {

// The lane of a shared leaf's gradient sum that sample s of a batch adds to: s % 4, except for the
// batch's tail, from full = batch / 4 * 4 on, which goes to lane 0 (Tape sums a batch in four lanes).
inline std::size_t lane_of(std::size_t s, std::size_t full) { return s < full ? s % 4 : 0; }

// "avx2" or "baseline": what the kernels below run with in this process.
const char* simd_target();

// A dot whose every term is a shared scalar times a row (a neuron: weights times inputs):
// out[s] = 0.0 + coef[0] * rows[0][s] + coef[1] * rows[1][s] + ..., in rules::Dot's order, a block
// of samples at a time, so the partial sums stay in registers instead of making a trip through
// memory for every term.
void scaled_row_sum(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t n);

// Its backward for finite output grads go, samples s0 .. s0 + n - 1 of a batch (s0 a multiple of 16):
// row t's grad gains go[s] * coef[t], and go[s] * rows[t][s] is added to the four lanes
// coef_lanes[t] as Tape sums a shared leaf's gradient (sample s to lane s % 4, the batch's tail, from
// full = batch / 4 * 4 on, to lane 0), so the bits are those of the per-term loops. go is loaded once
// per block for all the terms.
void scaled_row_sum_backward(const double* go, const double* coef, const double* const* rows,
                             double* const* row_grads, double* const* coef_lanes, std::size_t k, std::size_t n,
                             std::size_t s0, std::size_t full);

// A layer: dots j = 0 .. J-1 that read the same K distinct rows, dot j's term k being
// coef[j * K + k] * rows[k]. Its forward, out[j] as scaled_row_sum would give it, with each block of
// the rows loaded once for several dots. Where biased[j] is not null it also receives out[j] + bias[j]
// (a neuron's bias add, done while the block is still in registers); where out[j] is null (a row that
// only its bias add reads), only that.
void layer_forward(double* const* out, const double* coef, const double* const* rows, std::size_t dots, std::size_t k,
                   std::size_t n, const double* bias, double* const* biased);

// The backward of all of them at once, for finite output grads go[j]:
// row k's grad gains go[j][s] * coef[j * K + k] for j = J-1 down to 0 (the order in which the dots'
// own backward passes, last dot first, would add them), and the lanes coef_lanes[j * K + k] gain
// go[j][s] * rows[k][s] as in scaled_row_sum_backward. The rows' grads are blocked like
// layer_forward, and the lanes of several weights stay in registers through all n samples. With
// row_grads null (nothing reads the rows' grads: inputs whose gradients nobody asked for) only the
// lanes.
void layer_backward(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                    double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t n, std::size_t s0,
                    std::size_t full);

}  // namespace arenagrad::kernels
