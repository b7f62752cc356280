#include "optimizer.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace arenagrad {

namespace {

std::string number(double x) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", x);
    return text;
}

// The checks of torch.optim (and arenagrad.optim): a value in [low, high], or [low, high).
void check_range(double value, const char* name, double low, double high, bool high_open = false) {
    const bool ok = value >= low && (high_open ? value < high : value <= high);  // false for nan
    if (!ok) {
        throw std::invalid_argument(std::string(name) + " must lie in [" + number(low) + ", " + number(high) +
                                    (high_open ? ")" : "]") + ", got " + number(value));
    }
}

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

// A parameter given twice would be updated twice per step with one grad: always a bug.
ParamGroup::ParamGroup(Arena& arena, std::vector<NodeId> params) : arena_(arena), params_(std::move(params)) {
    std::unordered_map<NodeId, std::size_t> seen;
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const auto [it, fresh] = seen.emplace(params_[i], i);
        if (!fresh) {
            throw std::invalid_argument("parameter " + std::to_string(i) + " is the same Value as parameter " +
                                        std::to_string(it->second) + "; give each parameter once");
        }
    }
    for (const NodeId p : params_) arena_.retain(p);
}

ParamGroup::~ParamGroup() {
    for (const NodeId p : params_) arena_.release(p);
}

void ParamGroup::zero_grad() {
    for (const NodeId p : params_) arena_.set_grad(p, 0.0);
}

void ParamGroup::get_data(double* out) const {
    for (std::size_t i = 0; i < params_.size(); ++i) out[i] = arena_.value(params_[i]);
}

void ParamGroup::set_data(const double* values) {
    for (std::size_t i = 0; i < params_.size(); ++i) arena_.set_value(params_[i], values[i]);
}

void ParamGroup::get_grad(double* out) const {
    for (std::size_t i = 0; i < params_.size(); ++i) out[i] = arena_.grad(params_[i]);
}

void ParamGroup::sgd_step(double lr, double momentum, double dampening, double weight_decay, bool nesterov) {
    check_range(lr, "lr", 0.0, kInf);
    check_range(momentum, "momentum", 0.0, kInf);
    check_range(dampening, "dampening", 0.0, 1.0);
    check_range(weight_decay, "weight_decay", 0.0, kInf);
    if (nesterov && (momentum <= 0.0 || dampening != 0.0)) {
        throw std::invalid_argument("Nesterov momentum requires a momentum and zero dampening");
    }
    const bool first = momentum_buffer_.empty();
    if (momentum != 0.0 && first) momentum_buffer_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const NodeId p = params_[i];
        double g = arena_.grad(p);
        if (weight_decay != 0.0) g = g + weight_decay * arena_.value(p);
        if (momentum != 0.0) {
            double& buf = momentum_buffer_[i];
            buf = first ? g : buf * momentum + (1.0 - dampening) * g;  // torch clones g on the first step
            g = nesterov ? g + momentum * buf : buf;
        }
        arena_.set_value(p, arena_.value(p) + (-lr) * g);
    }
}

void ParamGroup::adam_step(double lr, double beta1, double beta2, double eps, double weight_decay) {
    check_range(lr, "lr", 0.0, kInf);
    check_range(beta1, "betas[0]", 0.0, 1.0, true);
    check_range(beta2, "betas[1]", 0.0, 1.0, true);
    check_range(eps, "eps", 0.0, kInf);
    check_range(weight_decay, "weight_decay", 0.0, kInf);
    if (exp_avg_.empty()) {
        exp_avg_.assign(params_.size(), 0.0);
        exp_avg_sq_.assign(params_.size(), 0.0);
    }
    ++adam_step_count_;
    const auto step = static_cast<double>(adam_step_count_);
    const double bias_correction1 = 1.0 - std::pow(beta1, step);
    const double bias_correction2 = 1.0 - std::pow(beta2, step);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);  // torch: bias_correction2 ** 0.5
    const double weight = 1.0 - beta1;
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const NodeId p = params_[i];
        double g = arena_.grad(p);
        if (weight_decay != 0.0) g = g + weight_decay * arena_.value(p);
        double& m = exp_avg_[i];
        // torch's lerp kernel: two formulas, chosen by the weight, for accuracy at both ends.
        m = weight < 0.5 ? m + weight * (g - m) : g - (g - m) * (1.0 - weight);
        double& v = exp_avg_sq_[i];
        v = v * beta2 + (1.0 - beta2) * g * g;
        const double denom = std::sqrt(v) / bias_correction2_sqrt + eps;
        arena_.set_value(p, arena_.value(p) + (-step_size) * m / denom);
    }
}

}  // namespace arenagrad
