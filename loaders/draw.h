// Drawing detections onto images and saving them as PNG (for the demo commands
// and for looking at what a model found).
#pragma once

#include <cstdint>
#include <string>

#include "loaders/image.h"

namespace repshare {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

// A distinct, saturated colour per class index, stable across runs.
Rgb palette_color(int index);

// Outline of the box [x0, x1) x [y0, y1) (image pixels), `thickness` pixels wide
// inwards, clipped to the image.
void draw_rect(Image& img, int x0, int y0, int x1, int y1, Rgb color, int thickness = 2);

// Filled box, clipped to the image.
void fill_rect(Image& img, int x0, int y0, int x1, int y1, Rgb color);

// Size of `text` as draw_text renders it at `scale` (pixels per font unit).
int text_width(const std::string& text, int scale = 1);
int text_height(int scale = 1);

// One line of text with its top-left corner at (x, y) on a filled background,
// using stb_easy_font's built-in glyphs; bytes outside printable ASCII are drawn
// as '?'. Clipped to the image.
void draw_text(Image& img, int x, int y, const std::string& text, Rgb fg, Rgb bg, int scale = 1);

// A detection: the box outline and a label above its top-left corner (inside the
// box when there is no room above).
void draw_labelled_box(Image& img, float x0, float y0, float x1, float y1,
                       const std::string& label, Rgb color);

// img as the bytes of a PNG file.
std::string encode_png(const Image& img);
// Writes img as PNG with write_file_atomic (loaders/output_file.h): a failure never
// leaves a partial PNG, a device is written in place. Throws Io naming the path.
void write_png(const Image& img, const std::string& path);

}  // namespace repshare
