// Resize (opset 10 and 11+) and Upsample (opset 7-9) of the last two axes.
#include <cmath>
#include <map>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ResizeLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  const size_t rank = x.rank();
  check(rank >= 2, ErrorKind::Unsupported, n.label(), ": input ", x.str(), " has fewer than 2 axes");
  check(n.attr_int("antialias", 0) == 0, ErrorKind::Unsupported, n.label(), ": antialias");
  check(!n.has("axes"), ErrorKind::Unsupported, n.label(), ": the axes attribute");
  check(n.attr_string("keep_aspect_ratio_policy", "stretch") == "stretch",
        ErrorKind::Unsupported, n.label(), ": keep_aspect_ratio_policy");
  p_ = ResizeParams();
  const std::string mode = n.attr_string("mode", "nearest");
  static const std::map<std::string, ResizeMode> modes = {
      {"nearest", ResizeMode::Nearest}, {"linear", ResizeMode::Linear},
      {"bilinear", ResizeMode::Linear}, {"cubic", ResizeMode::Cubic}};
  check(modes.count(mode) != 0, ErrorKind::Unsupported, n.label(), ": mode '", mode, "'");
  p_.mode = modes.at(mode);

  // Upsample and Resize-10 have no coordinate attributes: they behave as
  // "asymmetric" with floor rounding for nearest.
  const bool legacy = n.op_type == "Upsample" || g.opset < 11;
  std::vector<float> scales;
  std::vector<int64_t> sizes;
  if (n.op_type == "Upsample" && n.has("scales")) scales = n.attr_floats("scales");
  const size_t scales_input = legacy ? 1 : 2, sizes_input = 3;
  if (has_input(n, scales_input)) {
    const Value& v = input_value(g, n, scales_input);
    check(v.is_constant(), ErrorKind::Unsupported, n.label(), ": scales must be a constant");
    scales = v.as_floats();
  }
  if (!legacy && has_input(n, sizes_input)) {
    const Value& v = input_value(g, n, sizes_input);
    check(v.is_constant(), ErrorKind::Unsupported, n.label(), ": sizes must be a constant");
    sizes = v.as_ints();
  }
  if (!scales.empty() && !sizes.empty())
    fail(ErrorKind::Malformed, n.label(), ": both scales and sizes are given");
  check(!scales.empty() || !sizes.empty(), ErrorKind::Malformed, n.label(),
        ": neither scales nor sizes is given");
  Shape out = x;
  std::vector<float> sc(rank, 1.f);
  if (!sizes.empty()) {
    check(sizes.size() == rank, ErrorKind::Shape, n.label(), ": ", sizes.size(),
          " sizes for rank ", rank);
    for (size_t d = 0; d < rank; ++d) {
      out[d] = sizes[d];
      sc[d] = x[d] ? static_cast<float>(sizes[d]) / static_cast<float>(x[d]) : 1.f;
    }
  } else {
    check(scales.size() == rank, ErrorKind::Shape, n.label(), ": ", scales.size(),
          " scales for rank ", rank);
    for (size_t d = 0; d < rank; ++d) {
      check(scales[d] > 0, ErrorKind::Malformed, n.label(), ": scale ", scales[d]);
      sc[d] = scales[d];
      out[d] = static_cast<int64_t>(std::floor(static_cast<double>(x[d]) * scales[d]));
    }
  }
  for (size_t d = 0; d + 2 < rank; ++d)
    check(out[d] == x[d], ErrorKind::Unsupported, n.label(),
          ": resizing axes other than the last two");
  p_.outer = 1;
  for (size_t d = 0; d + 2 < rank; ++d) p_.outer *= x[d];
  p_.h = x[rank - 2];
  p_.w = x[rank - 1];
  p_.h_out = out[rank - 2];
  p_.w_out = out[rank - 1];
  p_.scale_h = sc[rank - 2];
  p_.scale_w = sc[rank - 1];

  if (legacy) {
    p_.coord = CoordMode::Asymmetric;
    p_.nearest = NearestMode::Floor;
  } else {
    static const std::map<std::string, CoordMode> coords = {
        {"half_pixel", CoordMode::HalfPixel},
        {"pytorch_half_pixel", CoordMode::PytorchHalfPixel},
        {"align_corners", CoordMode::AlignCorners},
        {"asymmetric", CoordMode::Asymmetric},
        {"tf_half_pixel_for_nn", CoordMode::TfHalfPixelForNn},
        {"tf_crop_and_resize", CoordMode::TfCropAndResize},
        {"half_pixel_symmetric", CoordMode::HalfPixelSymmetric}};
    const std::string coord = n.attr_string("coordinate_transformation_mode", "half_pixel");
    check(coords.count(coord) != 0, ErrorKind::Unsupported, n.label(),
          ": coordinate_transformation_mode '", coord, "'");
    p_.coord = coords.at(coord);
    static const std::map<std::string, NearestMode> nearest = {
        {"round_prefer_floor", NearestMode::RoundPreferFloor},
        {"round_prefer_ceil", NearestMode::RoundPreferCeil},
        {"floor", NearestMode::Floor},
        {"ceil", NearestMode::Ceil}};
    const std::string nm = n.attr_string("nearest_mode", "round_prefer_floor");
    check(nearest.count(nm) != 0, ErrorKind::Unsupported, n.label(), ": nearest_mode '", nm, "'");
    p_.nearest = nearest.at(nm);
    p_.cubic_a = n.attr_float("cubic_coeff_a", -0.75f);
    p_.exclude_outside = n.attr_int("exclude_outside", 0) != 0;
    p_.extrapolation_value = n.attr_float("extrapolation_value", 0.f);
    if (p_.coord == CoordMode::TfCropAndResize) {
      check(has_input(n, 1) && input_value(g, n, 1).is_constant(), ErrorKind::Unsupported,
            n.label(), ": tf_crop_and_resize needs a constant roi");
      auto roi = input_value(g, n, 1).as_floats();
      check(roi.size() == 2 * rank, ErrorKind::Shape, n.label(), ": roi has ", roi.size(),
            " values for rank ", rank);
      p_.roi[0] = roi[rank - 2];
      p_.roi[1] = roi[rank - 1];
      p_.roi[2] = roi[2 * rank - 2];
      p_.roi[3] = roi[2 * rank - 1];
    }
  }
  set_output(g, n, 0, out);
}

void ResizeLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.resize(p_, *in[0], *out[0]);
}

}  // namespace repshare
