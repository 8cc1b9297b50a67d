// Channel dependency analysis: one forward walk over the graph assigns every value
// that carries prunable channels a *layout* (which channels of which producer-created
// space it holds, on which axis, in which order). Ops that join tensors elementwise
// union their spaces; ops whose channel use we cannot prove block them. Shrinking
// then slices every recorded cut with the kept indices.
#include "pruning/channel_groups.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include "compress/base/error.h"
#include "compress/runtime/executor.h"
#include "compress/runtime/ops.h"

namespace compress {

namespace {

// During the walk, ChannelSegment::group holds a *space* id (a producer's output
// channels); spaces are unioned into groups at the end.
struct Layout {
  std::vector<ChannelSegment> segs;
  int64_t axis = 1;   // channel axis of the value
  int64_t block = 1;  // consecutive indices per channel (Flatten of C×H×W)
  int64_t Channels() const {
    int64_t c = 0;
    for (const auto& s : segs) c += s.end - s.begin;
    return c;
  }
};

class Analyzer {
 public:
  explicit Analyzer(const Graph& g) : g_(g) {
    for (const Node& n : g_.nodes) {
      for (const auto& in : n.inputs) {
        if (!in.empty()) ++uses_[in];
      }
    }
    for (const auto& o : g_.outputs) ++uses_[o.name];
  }

  ChannelAnalysis Run() {
    for (size_t i = 0; i < g_.nodes.size(); ++i) Visit(static_cast<int>(i));
    for (const auto& o : g_.outputs) {
      if (const Layout* l = Get(o.name)) BlockLayout(*l, "channels reach graph output '" + o.name + "'");
    }
    return Finish();
  }

 private:
  // ---- spaces and union-find --------------------------------------------------------------
  int NewSpace(int64_t channels, int producer) {
    parent_.push_back(static_cast<int>(parent_.size()));
    size_.push_back(channels);
    producer_.push_back(producer);
    blocked_.emplace_back();
    batchnorms_.emplace_back();
    return parent_.back();
  }
  int Find(int s) {
    while (parent_[s] != s) s = parent_[s] = parent_[parent_[s]];
    return s;
  }
  bool Union(int a, int b) {
    a = Find(a), b = Find(b);
    if (a == b) return true;
    if (size_[a] != size_[b]) return false;
    if (b < a) std::swap(a, b);
    parent_[b] = a;
    if (blocked_[a].empty()) blocked_[a] = blocked_[b];
    return true;
  }
  void Block(int s, const std::string& reason) {
    s = Find(s);
    if (blocked_[s].empty()) blocked_[s] = reason;
  }
  void BlockLayout(const Layout& l, const std::string& reason) {
    for (const auto& seg : l.segs) Block(seg.group, reason);
  }
  bool Full(const ChannelSegment& s) { return s.begin == 0 && s.end == size_[Find(s.group)]; }

  // A fresh layout of `channels` new channels written by `producer` (-1: none).
  Layout Fresh(int64_t channels, int producer, int64_t axis = 1) {
    Layout l;
    l.segs.push_back({NewSpace(channels, producer), 0, channels});
    l.axis = axis;
    return l;
  }

  // ---- lookups ------------------------------------------------------------------------------
  const Layout* Get(const std::string& value) const {
    auto it = layouts_.find(value);
    return it == layouts_.end() ? nullptr : &it->second;
  }
  std::optional<std::vector<int64_t>> Shape(const std::string& value) const {
    if (g_.IsInitializer(value)) return g_.Weight(value).sizes().vec();
    if (auto info = g_.FindValue(value)) return info->shape;
    return std::nullopt;
  }
  int64_t Rank(const std::string& value) const {
    auto s = Shape(value);
    return s ? static_cast<int64_t>(s->size()) : -1;
  }
  void Set(const std::string& value, Layout l) {
    if (!value.empty()) layouts_[value] = std::move(l);
  }

  // Records that dimension `dim` of initializer `name` is indexed by `l`'s channels.
  // Blocks the channels when the initializer cannot be sliced on its own.
  void AddCut(const std::string& name, int64_t dim, const Layout& l, ChannelCut::Role role,
              int node) {
    const Initializer& init = g_.initializers.at(name);
    const std::string who = g_.nodes[node].Describe();
    if (uses_[name] > 1) {
      BlockLayout(l, "weight '" + name + "' is shared by several nodes");
    } else if (init.quant) {
      BlockLayout(l, "weight '" + name + "' of " + who + " is quantized (prune before quantizing)");
    } else if (dim >= init.value.dim() || init.value.size(dim) != l.Channels() * l.block) {
      BlockLayout(l, "weight '" + name + "' of " + who + " does not match the channel count");
    }
    cuts_.push_back({name, dim, l.segs, l.block, role, node});
  }

  // Unions the channels of two layouts joined elementwise; false when they do not
  // line up as whole spaces of equal size.
  bool Unify(const Layout& a, const Layout& b) {
    if (a.axis != b.axis || a.block != b.block || a.segs.size() != b.segs.size()) return false;
    for (size_t i = 0; i < a.segs.size(); ++i) {
      const auto &x = a.segs[i], &y = b.segs[i];
      if (Find(x.group) == Find(y.group) && x.begin == y.begin && x.end == y.end) continue;
      if (!Full(x) || !Full(y) || !Union(x.group, y.group)) return false;
    }
    return true;
  }

  static std::vector<ChannelSegment> Slice(const std::vector<ChannelSegment>& segs, int64_t lo,
                                           int64_t hi) {
    std::vector<ChannelSegment> out;
    int64_t offset = 0;
    for (const auto& s : segs) {
      const int64_t n = s.end - s.begin;
      const int64_t a = std::max(lo, offset), b = std::min(hi, offset + n);
      if (a < b) out.push_back({s.group, s.begin + (a - offset), s.begin + (b - offset)});
      offset += n;
    }
    return out;
  }

  // ---- the walk -------------------------------------------------------------------------
  void Visit(int idx) {
    const Node& n = g_.nodes[idx];
    const std::string& op = n.op_type;
    if (op == "Conv") return VisitConv(idx);
    if (op == "Gemm") return VisitGemm(idx);
    if (op == "MatMul") return VisitMatMul(idx);
    if (op == "BatchNormalization") return VisitBatchNorm(idx);
    if (HasTrait(op, kChannelwise)) return VisitUnary(idx);
    if (HasTrait(op, kElementwiseBinary)) return VisitBinary(idx);
    if (HasTrait(op, kChannelPool)) return VisitPool(idx);
    if (op == "Concat") return VisitConcat(idx);
    if (op == "Split") return VisitSplit(idx);
    if (op == "Flatten" || op == "Reshape") return VisitFlatten(idx);
    if (op == "Squeeze" || op == "Unsqueeze") return VisitSqueeze(idx);
    if (op == "Transpose") return VisitTranspose(idx);
    BlockInputs(n, n.Describe() + " is not channel-transparent");
  }

  // The layout of `n`'s first input when its channels are on axis 1, unflattened (as
  // Conv, BatchNormalization and pools read them). Otherwise blocks them ("<node>
  // <what>") and returns nullptr; nullptr also when the input carries no channels.
  const Layout* ChannelInput(const Node& n, const std::string& what) {
    const Layout* x = Get(n.inputs[0]);
    if (x && (x->axis != 1 || x->block != 1)) {
      BlockLayout(*x, n.Describe() + " " + what);
      return nullptr;
    }
    return x;
  }

  void BlockInputs(const Node& n, const std::string& reason) {
    for (const auto& in : n.inputs) {
      if (const Layout* l = Get(in)) BlockLayout(*l, reason);
    }
  }

  void VisitConv(int idx) {
    const Node& n = g_.nodes[idx];
    if (!n.HasInput(1) || !g_.IsInitializer(n.inputs[1])) {
      BlockInputs(n, n.Describe() + " has a non-constant weight");
      return;
    }
    const Layout* x = ChannelInput(n, "reads channels on an unexpected axis");
    const std::string& w = n.inputs[1];
    const Tensor& weight = g_.Weight(w);
    const int64_t out = weight.size(0), group = n.GetInt("group", 1);
    const int64_t in = weight.size(1) * group;
    if (group > 1 && group == in && out == in && x) {
      // Depthwise: output channel c is input channel c filtered; the filters and the
      // group count shrink with the channels.
      Layout l = *x;
      AddCut(w, 0, l, ChannelCut::Role::kFollower, idx);
      if (n.HasInput(2)) AddBias(n.inputs[2], l, idx);
      edits_.push_back({ChannelEdit::Kind::kConvGroup, idx, {l.segs}, 1});
      Set(n.outputs[0], l);
      return;
    }
    Layout l = Fresh(out, idx);
    if (group == 1) {
      if (x) AddCut(w, 1, *x, ChannelCut::Role::kConsumer, idx);
    } else {
      const std::string reason = n.Describe() + " has group=" + std::to_string(group);
      if (x) BlockLayout(*x, reason);
      BlockLayout(l, reason);
    }
    AddCut(w, 0, l, ChannelCut::Role::kProducer, idx);
    if (n.HasInput(2)) AddBias(n.inputs[2], l, idx);
    Set(n.outputs[0], l);
  }

  // A per-output-channel bias (Conv's B, Gemm's C) rides along with its channels.
  void AddBias(const std::string& bias, const Layout& l, int idx) {
    if (!g_.IsInitializer(bias)) {
      BlockLayout(l, g_.nodes[idx].Describe() + " has a non-constant bias");
      return;
    }
    const Tensor& b = g_.Weight(bias);
    if (b.numel() == 1 && l.Channels() != 1) return;  // broadcast scalar (Gemm C)
    AddCut(bias, b.dim() - 1, l, ChannelCut::Role::kFollower, idx);
  }

  void VisitGemm(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* a = Get(n.inputs[0]);
    if (!g_.IsInitializer(n.inputs[1]) || n.GetInt("transA", 0) != 0) {
      BlockInputs(n, n.Describe() + " has a non-constant or transposed operand");
      return;
    }
    const bool trans_b = n.GetInt("transB", 0) != 0;
    const Tensor& w = g_.Weight(n.inputs[1]);
    if (a) {
      if (a->axis != 1) {
        BlockLayout(*a, n.Describe() + " reads channels on an unexpected axis");
      } else {
        AddCut(n.inputs[1], trans_b ? 1 : 0, *a, ChannelCut::Role::kConsumer, idx);
      }
    }
    Layout l = Fresh(trans_b ? w.size(0) : w.size(1), idx);
    AddCut(n.inputs[1], trans_b ? 0 : 1, l, ChannelCut::Role::kProducer, idx);
    if (n.HasInput(2)) AddBias(n.inputs[2], l, idx);
    Set(n.outputs[0], l);
  }

  void VisitMatMul(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* a = Get(n.inputs[0]);
    if (!g_.IsInitializer(n.inputs[1]) || g_.Weight(n.inputs[1]).dim() != 2 ||
        Rank(n.inputs[0]) < 2) {
      BlockInputs(n, n.Describe() + " multiplies two activations");
      return;
    }
    const int64_t rank = Rank(n.inputs[0]);
    if (a) {
      if (a->axis != rank - 1) {
        BlockLayout(*a, n.Describe() + " reads channels on an unexpected axis");
      } else {
        AddCut(n.inputs[1], 0, *a, ChannelCut::Role::kConsumer, idx);
      }
    }
    Layout l = Fresh(g_.Weight(n.inputs[1]).size(1), idx, rank - 1);
    AddCut(n.inputs[1], 1, l, ChannelCut::Role::kProducer, idx);
    Set(n.outputs[0], l);
  }

  void VisitBatchNorm(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* x = ChannelInput(n, "normalizes an unexpected axis");
    if (!x) return;
    for (size_t i = 1; i < 5 && i < n.inputs.size(); ++i) {
      if (g_.IsInitializer(n.inputs[i])) {
        AddCut(n.inputs[i], 0, *x, ChannelCut::Role::kFollower, idx);
      } else {
        BlockLayout(*x, n.Describe() + " has non-constant parameters");
      }
    }
    if (x->segs.size() == 1 && Full(x->segs[0])) batchnorms_[x->segs[0].group].push_back(idx);
    Set(n.outputs[0], *x);
  }

  void VisitUnary(int idx) {
    const Node& n = g_.nodes[idx];
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (const Layout* l = Get(n.inputs[i])) BlockLayout(*l, n.Describe() + " uses channels as a parameter");
    }
    if (const Layout* x = Get(n.inputs[0])) Set(n.outputs[0], *x);
  }

  void VisitBinary(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* a = Get(n.inputs[0]);
    const Layout* b = Get(n.inputs[1]);
    if (a && b) {
      if (Rank(n.inputs[0]) != Rank(n.inputs[1]) || !Unify(*a, *b)) {
        const std::string reason = n.Describe() + " joins channels that do not line up";
        BlockLayout(*a, reason);
        BlockLayout(*b, reason);
      }
      Set(n.outputs[0], *a);
      return;
    }
    if (!a && !b) return;
    const Layout& l = a ? *a : *b;
    const std::string& value = a ? n.inputs[0] : n.inputs[1];
    const std::string& other = a ? n.inputs[1] : n.inputs[0];
    // The other operand must not vary along the channel axis, or be a constant we can
    // slice with the channels (a per-channel scale or shift).
    auto shape = Shape(other);
    const int64_t rank = Rank(value);
    if (!shape || rank < 0) {
      BlockLayout(l, n.Describe() + " has an operand of unknown shape");
    } else {
      const int64_t dim = l.axis - (rank - static_cast<int64_t>(shape->size()));
      const bool broadcast = dim < 0 || (*shape)[dim] == 1;
      if (!broadcast) {
        if (g_.IsInitializer(other)) {
          AddCut(other, dim, l, ChannelCut::Role::kFollower, idx);
        } else {
          BlockLayout(l, n.Describe() + " combines the channels with '" + other + "'");
        }
      }
    }
    Set(n.outputs[0], l);
  }

  void VisitPool(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* x = ChannelInput(n, "pools an unexpected axis");
    if (!x) return;
    Set(n.outputs[0], *x);
  }

  void VisitConcat(int idx) {
    const Node& n = g_.nodes[idx];
    const int64_t rank = Rank(n.outputs[0]);
    int64_t axis = n.GetInt("axis");
    if (axis < 0) axis += rank;
    const Layout* first = nullptr;
    for (const auto& in : n.inputs) {
      if (const Layout* l = Get(in)) first = first ? first : l;
    }
    if (!first) return;
    if (axis != first->axis) {
      // Joining along another axis couples the inputs' channels elementwise.
      for (const auto& in : n.inputs) {
        const Layout* l = Get(in);
        if (!l || !Unify(*first, *l)) {
          BlockInputs(n, n.Describe() + " joins channels that do not line up");
          break;
        }
      }
      Set(n.outputs[0], *first);
      return;
    }
    Layout out;
    out.axis = axis;
    for (const auto& in : n.inputs) {
      const Layout* l = Get(in);
      auto shape = Shape(in);
      if (l && l->block == 1 && l->axis == axis) {
        out.segs.insert(out.segs.end(), l->segs.begin(), l->segs.end());
      } else if (!l && shape && axis < static_cast<int64_t>(shape->size()) && (*shape)[axis] > 0) {
        // Channels from outside any prunable layer stay; they still take their range.
        Layout fixed = Fresh((*shape)[axis], -1, axis);
        BlockLayout(fixed, "channels of '" + in + "' are not written by a prunable layer");
        out.segs.insert(out.segs.end(), fixed.segs.begin(), fixed.segs.end());
      } else {
        BlockInputs(n, n.Describe() + " joins an input whose channels cannot be placed");
        return;
      }
    }
    Set(n.outputs[0], out);
  }

  void VisitSplit(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* x = Get(n.inputs[0]);
    if (!x) return;
    int64_t axis = n.GetInt("axis", 0);
    if (axis < 0) axis += Rank(n.inputs[0]);
    if (axis != x->axis) {
      for (const auto& o : n.outputs) Set(o, *x);
      return;
    }
    std::vector<int64_t> sizes;
    if (n.HasInput(1)) {
      if (!g_.IsInitializer(n.inputs[1]) || uses_[n.inputs[1]] > 1) {
        BlockLayout(*x, n.Describe() + " has split sizes that cannot be rewritten");
        return;
      }
      const Tensor s = g_.Weight(n.inputs[1]).to(torch::kCPU, torch::kLong);
      sizes.assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
    } else if (n.HasAttr("split")) {
      sizes = n.GetInts("split");
    } else {
      const int64_t parts = static_cast<int64_t>(n.outputs.size());
      if (parts == 0 || x->Channels() % parts != 0) {
        BlockLayout(*x, n.Describe() + " splits unevenly");
        return;
      }
      sizes.assign(parts, x->Channels() / parts);
    }
    if (x->block != 1 || sizes.size() != n.outputs.size()) {
      BlockLayout(*x, n.Describe() + " splits channels in an unsupported way");
      return;
    }
    ChannelEdit edit{ChannelEdit::Kind::kSplitSizes, idx, {}, 1};
    int64_t offset = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      Layout piece = *x;
      piece.segs = Slice(x->segs, offset, offset + sizes[k]);
      offset += sizes[k];
      edit.layouts.push_back(piece.segs);
      Set(n.outputs[k], piece);
    }
    edits_.push_back(edit);
  }

  // Flatten(axis=1), or a Reshape to [N, C*H*W]: channel c becomes the column block
  // [c*H*W, (c+1)*H*W) (row-major order of C×H×W).
  void VisitFlatten(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* x = Get(n.inputs[0]);
    if (!x) return;
    auto in = Shape(n.inputs[0]);
    auto out = Shape(n.outputs[0]);
    const std::string reason = n.Describe() + " reshapes the channels";
    if (x->axis != 1 || !in || !out || out->size() != 2 || in->size() < 2) {
      BlockLayout(*x, reason);
      return;
    }
    int64_t inner = 1;
    for (size_t d = 2; d < in->size(); ++d) {
      if ((*in)[d] <= 0) return BlockLayout(*x, reason);
      inner *= (*in)[d];
    }
    if ((*out)[1] != (*in)[1] * inner) return BlockLayout(*x, reason);
    if (n.op_type == "Flatten" && n.GetInt("axis", 1) != 1) return BlockLayout(*x, reason);
    Layout l = *x;
    l.block = x->block * inner;
    if (n.op_type == "Reshape") {
      if (!g_.IsInitializer(n.inputs[1]) || uses_[n.inputs[1]] > 1) return BlockLayout(*x, reason);
      const Tensor t = g_.Weight(n.inputs[1]).to(torch::kCPU, torch::kLong);
      if (t.numel() != 2) return BlockLayout(*x, reason);
      if (t[1].item<int64_t>() > 0) edits_.push_back({ChannelEdit::Kind::kReshapeTarget, idx, {l.segs}, l.block});
    }
    Set(n.outputs[0], l);
  }

  void VisitSqueeze(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* x = Get(n.inputs[0]);
    if (!x) return;
    std::vector<int64_t> axes = n.GetInts("axes");
    if (n.HasInput(1)) {
      if (!g_.IsInitializer(n.inputs[1])) return BlockLayout(*x, n.Describe() + " has runtime axes");
      const Tensor t = g_.Weight(n.inputs[1]).to(torch::kCPU, torch::kLong);
      axes.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
    const int64_t in_rank = Rank(n.inputs[0]), out_rank = Rank(n.outputs[0]);
    if (axes.empty() || in_rank < 0 || out_rank < 0) {
      return BlockLayout(*x, n.Describe() + " has unknown axes");
    }
    for (auto& a : axes) a = a < 0 ? a + (n.op_type == "Squeeze" ? in_rank : out_rank) : a;
    std::sort(axes.begin(), axes.end());
    Layout l = *x;
    if (n.op_type == "Squeeze") {
      for (int64_t a : axes) {
        if (a == x->axis) return BlockLayout(*x, n.Describe() + " removes the channel axis");
        if (a < x->axis) --l.axis;
      }
    } else {
      for (int64_t a : axes) {
        if (a <= l.axis) ++l.axis;
      }
    }
    Set(n.outputs[0], l);
  }

  void VisitTranspose(int idx) {
    const Node& n = g_.nodes[idx];
    const Layout* x = Get(n.inputs[0]);
    if (!x) return;
    std::vector<int64_t> perm = n.GetInts("perm");
    if (perm.empty()) {
      perm.resize(Rank(n.inputs[0]) < 0 ? 0 : Rank(n.inputs[0]));
      std::iota(perm.rbegin(), perm.rend(), 0);
    }
    auto it = std::find(perm.begin(), perm.end(), x->axis);
    if (it == perm.end() || x->block != 1) {
      return BlockLayout(*x, n.Describe() + " moves the channels in an unsupported way");
    }
    Layout l = *x;
    l.axis = it - perm.begin();
    Set(n.outputs[0], l);
  }

  // ---- results --------------------------------------------------------------------------
  ChannelAnalysis Finish() {
    ChannelAnalysis a;
    std::map<int, int> group_of;  // root space -> group, in order of first appearance
    for (size_t s = 0; s < parent_.size(); ++s) {
      const int root = Find(static_cast<int>(s));
      if (!group_of.count(root)) {
        group_of[root] = static_cast<int>(a.groups.size());
        a.groups.emplace_back();
        a.groups.back().channels = size_[root];
      }
      ChannelGroup& g = a.groups[group_of[root]];
      if (producer_[s] >= 0) g.producers.push_back(producer_[s]);
      g.batchnorms.insert(g.batchnorms.end(), batchnorms_[s].begin(), batchnorms_[s].end());
    }
    for (size_t s = 0; s < parent_.size(); ++s) {
      ChannelGroup& g = a.groups[group_of[Find(static_cast<int>(s))]];
      if (g.blocked.empty()) g.blocked = blocked_[Find(static_cast<int>(s))];
      if (g.blocked.empty() && g.producers.empty()) g.blocked = "no prunable layer writes them";
    }
    for (auto& g : a.groups) {
      std::sort(g.producers.begin(), g.producers.end());
      std::sort(g.batchnorms.begin(), g.batchnorms.end());
    }
    auto translate = [&](std::vector<ChannelSegment>& segs) {
      for (auto& s : segs) s.group = group_of[Find(s.group)];
    };
    a.cuts = cuts_;
    for (auto& c : a.cuts) translate(c.layout);
    a.edits = edits_;
    for (auto& e : a.edits) {
      for (auto& l : e.layouts) translate(l);
    }
    return a;
  }

  const Graph& g_;
  std::map<std::string, int> uses_;
  std::vector<int> parent_;
  std::vector<int64_t> size_;
  std::vector<int> producer_;
  std::vector<std::string> blocked_;
  std::vector<std::vector<int>> batchnorms_;
  std::map<std::string, Layout> layouts_;
  std::vector<ChannelCut> cuts_;
  std::vector<ChannelEdit> edits_;
};

// Positions (in the dimension's order, blocks expanded) of the channels kept.
std::vector<int64_t> KeptPositions(const std::vector<ChannelSegment>& layout, int64_t block,
                                   const ChannelSelection& kept) {
  std::vector<int64_t> pos;
  int64_t offset = 0;
  for (const auto& s : layout) {
    const auto& k = kept[s.group];
    for (int64_t c = s.begin; c < s.end; ++c) {
      if (k.empty() || std::binary_search(k.begin(), k.end(), c)) {
        for (int64_t b = 0; b < block; ++b) pos.push_back((offset + c - s.begin) * block + b);
      }
    }
    offset += s.end - s.begin;
  }
  return pos;
}

int64_t KeptCount(const std::vector<ChannelSegment>& layout, const ChannelSelection& kept) {
  return static_cast<int64_t>(KeptPositions(layout, 1, kept).size());
}

Tensor IndexTensor(const std::vector<int64_t>& v, const Tensor& like) {
  return torch::tensor(v, torch::kLong).to(like.device());
}

}  // namespace

ChannelAnalysis AnalyzeChannels(const Graph& graph) { return Analyzer(graph).Run(); }

std::string ChannelAnalysis::Describe(const Graph& graph) const {
  std::ostringstream os;
  for (size_t i = 0; i < groups.size(); ++i) {
    const ChannelGroup& g = groups[i];
    if (g.producers.empty()) continue;  // fixed channels from outside: nothing to say
    os << "group " << i << ": " << g.channels << " channels, producers";
    for (int p : g.producers) os << " " << graph.nodes[p].name;
    if (!g.batchnorms.empty()) {
      os << "; bn";
      for (int b : g.batchnorms) os << " " << graph.nodes[b].name;
    }
    os << (g.blocked.empty() ? "; prunable" : "; blocked: " + g.blocked) << "\n";
  }
  return os.str();
}

at::Tensor ChannelScores(const Graph& graph, const ChannelAnalysis& analysis, int group,
                         ChannelCriterion criterion) {
  torch::NoGradGuard no_grad;
  const ChannelGroup& g = analysis.groups.at(group);
  at::Tensor total = torch::zeros({g.channels}, torch::kFloat);
  if (criterion == ChannelCriterion::kBn) {
    if (g.batchnorms.empty()) return at::Tensor();
    for (int b : g.batchnorms) {
      total += graph.Weight(graph.nodes[b].inputs[1]).detach().abs().to(torch::kCPU, torch::kFloat);
    }
    return total;
  }
  for (const ChannelCut& c : analysis.cuts) {
    if (c.role != ChannelCut::Role::kProducer || c.layout.size() != 1 || c.layout[0].group != group) {
      continue;
    }
    at::Tensor w = graph.Weight(c.initializer).detach().to(torch::kCPU, torch::kFloat);
    w = w.movedim(c.dim, 0).reshape({w.size(c.dim), -1});
    total += criterion == ChannelCriterion::kL2 ? w.pow(2).sum(1).sqrt() : w.abs().sum(1);
  }
  return total;
}

int64_t ChannelsToKeep(int64_t channels, double ratio, int64_t round_to) {
  int64_t keep = channels - std::llround(ratio * static_cast<double>(channels));
  if (round_to > 1) keep = (keep + round_to - 1) / round_to * round_to;
  keep = std::max<int64_t>(keep, std::max<int64_t>(round_to, 1));
  return std::min(keep, channels);
}

std::vector<int64_t> KeepHighest(const at::Tensor& scores, int64_t keep) {
  at::Tensor s = scores.detach().to(torch::kCPU, torch::kFloat).reshape(-1);
  // Stable ascending sort of -score: highest first, lower index first among ties.
  at::Tensor order = std::get<1>((-s).sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  std::vector<int64_t> kept(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + keep);
  std::sort(kept.begin(), kept.end());
  return kept;
}

void ShrinkChannels(Graph& graph, const ChannelAnalysis& analysis, const ChannelSelection& kept) {
  torch::NoGradGuard no_grad;
  // Plan every index first (layouts refer to the original numbering), then slice.
  std::vector<std::vector<int64_t>> positions;
  for (const ChannelCut& c : analysis.cuts) positions.push_back(KeptPositions(c.layout, c.block, kept));
  for (size_t i = 0; i < analysis.cuts.size(); ++i) {
    const ChannelCut& c = analysis.cuts[i];
    Initializer& init = graph.initializers.at(c.initializer);
    if (static_cast<int64_t>(positions[i].size()) == init.value.size(c.dim)) continue;
    const bool grad = init.value.requires_grad();
    const Tensor idx = IndexTensor(positions[i], init.value);
    init.value = init.value.detach().index_select(c.dim, idx).contiguous();
    if (grad) init.value.requires_grad_(true);
    if (init.mask.defined()) init.mask = init.mask.index_select(c.dim, idx).contiguous();
  }
  for (const ChannelEdit& e : analysis.edits) {
    Node& n = graph.nodes[e.node];
    switch (e.kind) {
      case ChannelEdit::Kind::kConvGroup:
        n.attrs["group"] = KeptCount(e.layouts[0], kept);
        break;
      case ChannelEdit::Kind::kReshapeTarget: {
        Tensor& shape = graph.Weight(n.inputs[1]);
        shape = shape.clone();
        shape[1].fill_(KeptCount(e.layouts[0], kept) * e.block);
        break;
      }
      case ChannelEdit::Kind::kSplitSizes: {
        std::vector<int64_t> sizes;
        for (const auto& l : e.layouts) sizes.push_back(KeptCount(l, kept));
        if (n.HasInput(1)) {
          graph.Weight(n.inputs[1]) = torch::tensor(sizes, torch::kLong);
        } else if (graph.opset >= 13) {
          // Sizes became uneven: opset 13 takes them as an input.
          std::string name = n.name + ".split";
          while (graph.IsInitializer(name) || graph.FindValue(name)) name += "_";
          graph.initializers[name].value = torch::tensor(sizes, torch::kLong);
          n.inputs.resize(2);
          n.inputs[1] = name;
        } else {
          n.attrs["split"] = sizes;
        }
        break;
      }
    }
  }
  graph.value_info.clear();
  InferShapes(graph);
  ValidateGraph(graph, "prune-channels (shrunk graph)");
}

void ZeroRemovedChannels(Graph& graph, const ChannelAnalysis& analysis,
                         const ChannelSelection& kept) {
  torch::NoGradGuard no_grad;
  for (const ChannelCut& c : analysis.cuts) {
    if (c.role != ChannelCut::Role::kConsumer) continue;
    Tensor& w = graph.Weight(c.initializer);
    const auto keep = KeptPositions(c.layout, c.block, kept);
    Tensor mask = torch::zeros({w.size(c.dim)}, torch::kBool);
    mask.index_fill_(0, torch::tensor(keep, torch::kLong), true);
    std::vector<int64_t> removed;
    for (int64_t i = 0; i < mask.size(0); ++i) {
      if (!mask[i].item<bool>()) removed.push_back(i);
    }
    if (!removed.empty()) w.index_fill_(c.dim, IndexTensor(removed, w), 0);
  }
}

}  // namespace compress
