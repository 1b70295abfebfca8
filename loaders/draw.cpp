#include "loaders/draw.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "loaders/output_file.h"

// Third-party code: its own warnings are not ours to fix.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO  // written through our own FILE so errors are checked
#include <stb_image_write.h>
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

namespace repshare {

namespace {

constexpr int kFontLineHeight = 10;  // stb_easy_font glyphs span rows 0..9 (descenders)
constexpr int kLabelPadding = 1;

std::string printable(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (c < 32 || c > 126) c = '?';
  }
  return s;
}

void append_to_string(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<size_t>(size));
}

}  // namespace

Rgb palette_color(int index) {
  // Hues spaced by the golden angle stay distinct for neighbouring indices.
  const double hue = std::fmod(std::abs(index) * 137.508, 360.0) / 60.0;
  const double x = 1.0 - std::fabs(std::fmod(hue, 2.0) - 1.0);
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(hue)) {
    case 0: r = 1, g = x; break;
    case 1: r = x, g = 1; break;
    case 2: g = 1, b = x; break;
    case 3: g = x, b = 1; break;
    case 4: r = x, b = 1; break;
    default: r = 1, b = x; break;
  }
  auto byte = [](double v) { return static_cast<uint8_t>(std::lround(55 + 200 * v)); };
  return Rgb{byte(r), byte(g), byte(b)};
}

void fill_rect(Image& img, int x0, int y0, int x1, int y1, Rgb color) {
  x0 = std::max(x0, 0);
  y0 = std::max(y0, 0);
  x1 = std::min(x1, img.width);
  y1 = std::min(y1, img.height);
  for (int y = y0; y < y1; ++y) {
    uint8_t* p = img.row(y);
    for (int x = x0; x < x1; ++x) {
      p[x * 3 + 0] = color.r;
      p[x * 3 + 1] = color.g;
      p[x * 3 + 2] = color.b;
    }
  }
}

void draw_rect(Image& img, int x0, int y0, int x1, int y1, Rgb color, int thickness) {
  const int t = std::max(1, std::min(thickness, std::min(x1 - x0, y1 - y0) / 2 + 1));
  fill_rect(img, x0, y0, x1, y0 + t, color);  // top
  fill_rect(img, x0, y1 - t, x1, y1, color);  // bottom
  fill_rect(img, x0, y0, x0 + t, y1, color);  // left
  fill_rect(img, x1 - t, y0, x1, y1, color);  // right
}

int text_width(const std::string& text, int scale) {
  std::string s = printable(text);
  return stb_easy_font_width(&s[0]) * scale;
}

int text_height(int scale) { return kFontLineHeight * scale; }

void draw_text(Image& img, int x, int y, const std::string& text, Rgb fg, Rgb bg, int scale) {
  check(scale >= 1, ErrorKind::Argument, "draw_text: scale ", scale, " must be at least 1");
  std::string s = printable(text);
  s.erase(std::find(s.begin(), s.end(), '\n'), s.end());
  fill_rect(img, x, y, x + text_width(s, scale) + 2 * kLabelPadding,
            y + text_height(scale) + 2 * kLabelPadding, bg);
  // stb_easy_font emits one axis-aligned quad (4 vertices of 16 bytes) per stroke,
  // in font units; ~270 bytes per character is its documented average.
  std::vector<char> vertices(s.size() * 512 + 64);
  const int quads = stb_easy_font_print(0, 0, &s[0], nullptr, vertices.data(),
                                        static_cast<int>(vertices.size()));
  for (int q = 0; q < quads; ++q) {
    float corner[2][2];  // vertices 0 and 2: top-left and bottom-right
    std::memcpy(corner[0], &vertices[q * 64], 8);
    std::memcpy(corner[1], &vertices[q * 64 + 32], 8);
    auto px = [&](float v, int origin) { return origin + kLabelPadding + std::lround(v * scale); };
    fill_rect(img, px(corner[0][0], x), px(corner[0][1], y), px(corner[1][0], x),
              px(corner[1][1], y), fg);
  }
}

void draw_labelled_box(Image& img, float x0, float y0, float x1, float y1,
                       const std::string& label, Rgb color) {
  const int left = std::lround(x0), top = std::lround(y0);
  draw_rect(img, left, top, std::lround(x1), std::lround(y1), color);
  if (label.empty()) return;
  const int height = text_height() + 2 * kLabelPadding;
  const int text_top = top - height >= 0 ? top - height : top;
  // Black or white text, whichever contrasts more with the box colour.
  const int luma = (299 * color.r + 587 * color.g + 114 * color.b) / 1000;
  const Rgb ink = luma > 128 ? Rgb{0, 0, 0} : Rgb{255, 255, 255};
  draw_text(img, std::max(left, 0), text_top, label, ink, color);
}

std::string encode_png(const Image& img) {
  check(img.width > 0 && img.height > 0 &&
            img.pixels.size() == static_cast<size_t>(img.width) * img.height * 3,
        ErrorKind::Argument, "encode_png: image is empty or inconsistent");
  std::string png;
  check(stbi_write_png_to_func(append_to_string, &png, img.width, img.height, 3, img.pixels.data(),
                               img.width * 3) != 0,
        ErrorKind::Io, "the PNG encoder failed");
  return png;
}

void write_png(const Image& img, const std::string& path) {
  write_file_atomic(path, encode_png(img));
}

}  // namespace repshare
