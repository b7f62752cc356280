// Parameter updates in bulk, so a training step over a recorded graph never leaves native code.
//
// The formulas are PyTorch's (torch.optim.SGD and torch.optim.Adam, single-tensor code path),
// written with the same operation order, so results track torch's to the last few bits.
#pragma once

#include <cstddef>
#include <vector>

#include "arena.hpp"

namespace arenagrad {

class ParamGroup {
  public:
    // Holds a reference to each parameter: they stay alive while the group does.
    ParamGroup(Arena& arena, std::vector<NodeId> params);
    ~ParamGroup();
    ParamGroup(const ParamGroup&) = delete;
    ParamGroup& operator=(const ParamGroup&) = delete;

    std::size_t size() const { return params_.size(); }
    const std::vector<NodeId>& params() const { return params_; }

    void zero_grad();
    void get_data(double* out) const;
    void set_data(const double* values);
    void get_grad(double* out) const;

    void sgd_step(double lr, double momentum, double dampening, double weight_decay, bool nesterov);
    void adam_step(double lr, double beta1, double beta2, double eps, double weight_decay);
    long adam_steps() const { return adam_step_count_; }

  private:
    Arena& arena_;
    std::vector<NodeId> params_;
    std::vector<double> momentum_buffer_;  // empty until the first momentum step
    std::vector<double> exp_avg_;
    std::vector<double> exp_avg_sq_;
    long adam_step_count_ = 0;
};

}  // namespace arenagrad
