// write_sweep_report(): one self-contained HTML page of a sweep (lowbit/sweep.h). Everything is
// drawn here as inline SVG (no script, no font, no request: the page works offline and prints);
// thumbnails are PNG data URIs. The figures come from the SweepResult, formatted with fixed
// precision, so the same figures give the same bytes; timing figures carry data-timing.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/file_util.h"
#include "lowbit/error.h"
#include "lowbit/sweep.h"

namespace lowbit {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return v > 0 ? "inf" : v < 0 ? "-inf" : "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  std::string s = buf;
  if (s[0] == '-' && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);  // no "-0.00"
  return s;
}

std::string bytes_text(int64_t b) {
  if (b >= 10 * 1024 * 1024) return fixed(static_cast<double>(b) / (1024.0 * 1024.0), 1) + " MiB";
  if (b >= 10 * 1024) return fixed(static_cast<double>(b) / 1024.0, 1) + " KiB";
  return std::to_string(b) + " B";
}

const char* color_of(const SweepVariant& v) {
  if (v.max_drop) return "#7b3fb0";
  if (v.mode == "dynamic") return "#c7342f";
  if (v.mode == "partial") return "#2b8a3e";
  return "#1f5fa8";
}

// ---- PNG (8-bit grayscale), for the thumbnails --------------------------------------------------
void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}
void chunk(std::string& png, const char* type, const std::string& data) {
  put_u32(png, static_cast<uint32_t>(data.size()));
  std::string body = std::string(type, 4) + data;
  png += body;
  put_u32(png, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}
std::string png_gray(const std::vector<uint8_t>& pixels, int64_t h, int64_t w) {
  std::string raw;
  for (int64_t y = 0; y < h; ++y) {
    raw += '\0';  // filter: none
    raw.append(reinterpret_cast<const char*>(pixels.data() + y * w), static_cast<size_t>(w));
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string z(size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &size, reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()), 9) != Z_OK)
    throw Error(ErrorKind::Io, "report: zlib could not compress a thumbnail");
  z.resize(size);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(w));
  put_u32(ihdr, static_cast<uint32_t>(h));
  ihdr += std::string("\x08\x00\x00\x00\x00", 5);  // 8 bits, grayscale, deflate, no filter set, no interlace
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", "");
  return png;
}
std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += t[v >> 18], out += t[(v >> 12) & 63], out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += '=';
  }
  return out;
}

// ---- charts -------------------------------------------------------------------------------------
// A plot area of W x H in a viewBox with margins for the axes; x and y map data to pixels.
struct Plot {
  double x0, x1, y0, y1;  // data ranges
  bool log_x = false;
  static constexpr double W = 640, H = 360, L = 64, R = 16, T = 16, B = 48;
  double px(double x) const {
    const double a = log_x ? std::log10(x) : x, lo = log_x ? std::log10(x0) : x0, hi = log_x ? std::log10(x1) : x1;
    return L + (hi > lo ? (a - lo) / (hi - lo) : 0.5) * (W - L - R);
  }
  double py(double y) const { return T + (y1 > y0 ? (y1 - y) / (y1 - y0) : 0.5) * (H - T - B); }
};

// Round tick steps (1, 2, 5 x 10^k) covering [lo, hi] with about n ticks.
std::vector<double> ticks(double lo, double hi, int n) {
  std::vector<double> out;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return out;
}

std::string axes(const Plot& p, const std::string& x_label, const std::string& y_label, const std::vector<double>& xt,
                 const std::vector<std::string>& xt_text, const std::vector<double>& yt, int y_decimals) {
  std::string s;
  const double bottom = Plot::H - Plot::B, right = Plot::W - Plot::R;
  s += "<g class=\"axes\">";
  for (double y : yt) {
    const std::string py = fixed(p.py(y), 1);
    s += "<line class=\"grid\" x1=\"" + fixed(Plot::L, 1) + "\" y1=\"" + py + "\" x2=\"" + fixed(right, 1) + "\" y2=\"" + py + "\"/>";
    s += "<text x=\"" + fixed(Plot::L - 6, 1) + "\" y=\"" + fixed(p.py(y) + 4, 1) + "\" text-anchor=\"end\">" + fixed(y, y_decimals) + "</text>";
  }
  for (size_t i = 0; i < xt.size(); ++i) {
    const std::string px = fixed(p.px(xt[i]), 1);
    s += "<line class=\"grid\" x1=\"" + px + "\" y1=\"" + fixed(Plot::T, 1) + "\" x2=\"" + px + "\" y2=\"" + fixed(bottom, 1) + "\"/>";
    s += "<text x=\"" + px + "\" y=\"" + fixed(bottom + 16, 1) + "\" text-anchor=\"middle\">" + esc(xt_text[i]) + "</text>";
  }
  s += "<line class=\"axis\" x1=\"" + fixed(Plot::L, 1) + "\" y1=\"" + fixed(bottom, 1) + "\" x2=\"" + fixed(right, 1) + "\" y2=\"" +
       fixed(bottom, 1) + "\"/>";
  s += "<line class=\"axis\" x1=\"" + fixed(Plot::L, 1) + "\" y1=\"" + fixed(Plot::T, 1) + "\" x2=\"" + fixed(Plot::L, 1) + "\" y2=\"" +
       fixed(bottom, 1) + "\"/>";
  s += "<text x=\"" + fixed((Plot::L + right) / 2, 1) + "\" y=\"" + fixed(Plot::H - 8, 1) + "\" text-anchor=\"middle\" class=\"label\">" +
       esc(x_label) + "</text>";
  s += "<text transform=\"translate(14 " + fixed((Plot::T + bottom) / 2, 1) + ") rotate(-90)\" text-anchor=\"middle\" class=\"label\">" +
       esc(y_label) + "</text>";
  s += "</g>";
  return s;
}

std::string svg_open(const std::string& id, const std::string& title, bool timing = false) {
  return "<svg id=\"" + id + "\" viewBox=\"0 0 " + fixed(Plot::W, 0) + " " + fixed(Plot::H, 0) + "\" role=\"img\" aria-label=\"" + esc(title) +
         "\"" + (timing ? " data-timing=\"1\"" : "") + "><title>" + esc(title) + "</title>";
}

double accuracy_range_low(const SweepResult& r) {
  double lo = r.float_test_accuracy * 100;
  for (const auto& v : r.variants)
    if (v.measured) lo = std::min(lo, v.test_accuracy * 100);
  return lo;
}

// Accuracy against file size (log scale), the Pareto front drawn and labelled.
std::string size_chart(const SweepResult& r) {
  double smallest = static_cast<double>(r.float_file_bytes), largest = smallest;
  for (const auto& v : r.variants)
    if (v.measured) smallest = std::min(smallest, double(v.file_bytes)), largest = std::max(largest, double(v.file_bytes));
  Plot p{smallest / 1.3, largest * 1.3, 0, 0, true};
  const double lo = accuracy_range_low(r), hi = r.float_test_accuracy * 100;
  for (const auto& v : r.variants)
    if (v.measured) p.y1 = std::max(p.y1, v.test_accuracy * 100);
  p.y1 = std::max(p.y1, hi);
  const double pad = std::max(0.5, (p.y1 - lo) * 0.08);
  p.y0 = lo - pad, p.y1 += pad;
  std::vector<double> xt;
  std::vector<std::string> xt_text;
  for (double d = std::pow(10.0, std::floor(std::log10(p.x0))); d <= p.x1; d *= 10)
    for (double m : {1.0, 2.0, 5.0})
      if (d * m >= p.x0 && d * m <= p.x1) xt.push_back(d * m), xt_text.push_back(bytes_text(static_cast<int64_t>(d * m)));
  std::string s = svg_open("chart-size", "test accuracy against model size, Pareto front");
  s += axes(p, "model file size (log scale)", "test accuracy (%)", xt, xt_text, ticks(p.y0, p.y1, 6), 1);
  const std::vector<size_t> front = pareto_front(r.variants);
  std::string line;
  for (size_t i : front)
    line += fixed(p.px(double(r.variants[i].file_bytes)), 1) + "," + fixed(p.py(r.variants[i].test_accuracy * 100), 1) + " ";
  if (!line.empty()) line.pop_back();
  s += "<polyline class=\"front\" points=\"" + line + "\"/>";
  const double fx = p.px(double(r.float_file_bytes)), fy = p.py(r.float_test_accuracy * 100);
  s += "<rect class=\"float-point\" x=\"" + fixed(fx - 5, 1) + "\" y=\"" + fixed(fy - 5, 1) +
       "\" width=\"10\" height=\"10\"><title>float: " + fixed(r.float_test_accuracy * 100, 2) + "%, " + bytes_text(r.float_file_bytes) +
       "</title></rect>";
  s += "<text class=\"point-label\" x=\"" + fixed(fx - 8, 1) + "\" y=\"" + fixed(fy - 8, 1) + "\" text-anchor=\"end\">float</text>";
  for (size_t i = 0; i < r.variants.size(); ++i) {
    const SweepVariant& v = r.variants[i];
    if (!v.measured) continue;
    const double x = p.px(double(v.file_bytes)), y = p.py(v.test_accuracy * 100);
    s += "<circle class=\"point" + std::string(v.on_front ? " on-front" : "") + "\" data-variant=\"" + esc(v.name) + "\" cx=\"" + fixed(x, 1) +
         "\" cy=\"" + fixed(y, 1) + "\" r=\"" + (v.on_front ? "5" : "3.5") + "\" fill=\"" + color_of(v) + "\"><title>" + esc(v.name) + ": " +
         fixed(v.test_accuracy * 100, 2) + "%, " + bytes_text(v.file_bytes) + "</title></circle>";
  }
  // Labels of the front's points: the first of right, left, above, below (of the point), then
  // right or left a line or more away, that overlaps no label placed before and stays inside the
  // plot (widths estimated at 5.6 px per character of the 10 px font); else to the right.
  struct Box {
    double x0, y0, x1, y1;
    bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
  };
  std::vector<Box> placed = {{fx - 8 - 5.6 * 5, fy - 17, fx + 6, fy + 6}};  // the float label and marker
  for (size_t k = 0; k < front.size(); ++k) {
    const SweepVariant& v = r.variants[front[k]];
    const double x = p.px(double(v.file_bytes)), y = p.py(v.test_accuracy * 100), w = 5.6 * double(v.name.size());
    struct Place {
      double tx, ty;
      const char* anchor;
      Box box;
    };
    std::vector<Place> places = {{x, y - 9, "middle", {x - w / 2, y - 18, x + w / 2, y - 7}},
                                 {x, y + 16, "middle", {x - w / 2, y + 7, x + w / 2, y + 18}}};
    for (double dy : {0.0, 12.0, -12.0, 24.0, -24.0, 36.0, -36.0}) {
      places.push_back({x + 8, y + 3.5 + dy, "start", {x + 8, y - 6 + dy, x + 8 + w, y + 5 + dy}});
      places.push_back({x - 8, y + 3.5 + dy, "end", {x - 8 - w, y - 6 + dy, x - 8, y + 5 + dy}});
    }
    std::rotate(places.begin(), places.begin() + 2, places.begin() + 4);  // right, left, then above, below, then further off
    const Place* chosen = &places[0];
    for (const Place& c : places) {
      const bool inside = c.box.x0 >= Plot::L && c.box.x1 <= Plot::W - Plot::R && c.box.y0 >= 0 && c.box.y1 <= Plot::H - Plot::B;
      if (inside && std::none_of(placed.begin(), placed.end(), [&](const Box& b) { return b.overlaps(c.box); })) {
        chosen = &c;
        break;
      }
    }
    placed.push_back(chosen->box);
    s += "<text class=\"point-label\" x=\"" + fixed(chosen->tx, 1) + "\" y=\"" + fixed(chosen->ty, 1) + "\" text-anchor=\"" + chosen->anchor +
         "\">" + esc(v.name) + "</text>";
  }
  return s + "</svg>";
}

// Accuracy against weight bits, one line per (mode, rounding, granularity).
std::string bits_chart(const SweepResult& r) {
  std::map<std::string, std::vector<const SweepVariant*>> series;
  std::vector<std::string> order;
  std::set<int> bits;
  for (const auto& v : r.variants) {
    if (!v.measured || v.max_drop) continue;
    const std::string key = v.mode + " " + v.rounding + " " + v.granularity;
    if (!series.count(key)) order.push_back(key);
    series[key].push_back(&v);
    bits.insert(v.bits);
  }
  Plot p{1.5, 8.5, accuracy_range_low(r), r.float_test_accuracy * 100};
  for (const auto& v : r.variants)
    if (v.measured) p.y1 = std::max(p.y1, v.test_accuracy * 100);
  const double pad = std::max(0.5, (p.y1 - p.y0) * 0.08);
  p.y0 -= pad, p.y1 += pad;
  std::vector<double> xt;
  std::vector<std::string> xt_text;
  for (int b : {2, 3, 4, 5, 6, 7, 8}) xt.push_back(b), xt_text.push_back(std::to_string(b));
  std::string s = svg_open("chart-bits", "test accuracy against weight bits, per mode");
  s += axes(p, "weight bits", "test accuracy (%)", xt, xt_text, ticks(p.y0, p.y1, 6), 1);
  const std::string fy = fixed(p.py(r.float_test_accuracy * 100), 1);
  s += "<line class=\"float-line\" x1=\"" + fixed(Plot::L, 1) + "\" y1=\"" + fy + "\" x2=\"" + fixed(Plot::W - Plot::R, 1) + "\" y2=\"" + fy + "\"/>";
  static const char* dashes[] = {"", "6 3", "2 3", "8 3 2 3"};
  std::string legend;
  for (size_t k = 0; k < order.size(); ++k) {
    auto& pts = series[order[k]];
    std::sort(pts.begin(), pts.end(), [](const SweepVariant* a, const SweepVariant* b) { return a->bits < b->bits; });
    std::string line;
    for (const SweepVariant* v : pts) line += fixed(p.px(v->bits), 1) + "," + fixed(p.py(v->test_accuracy * 100), 1) + " ";
    line.pop_back();
    const std::string dash = dashes[k / 3 % 4];
    s += "<polyline class=\"series\" stroke=\"" + std::string(color_of(*pts[0])) + "\"" + (dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\"") +
         " points=\"" + line + "\"/>";
    for (const SweepVariant* v : pts)
      s += "<circle class=\"bits-point\" cx=\"" + fixed(p.px(v->bits), 1) + "\" cy=\"" + fixed(p.py(v->test_accuracy * 100), 1) + "\" r=\"3\" fill=\"" +
           color_of(*v) + "\"><title>" + esc(v->name) + ": " + fixed(v->test_accuracy * 100, 2) + "%</title></circle>";
    legend += "<span><svg class=\"swatch\" viewBox=\"0 0 24 8\"><line x1=\"0\" y1=\"4\" x2=\"24\" y2=\"4\" class=\"series\" stroke=\"" +
              std::string(color_of(*pts[0])) + "\"" + (dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\"") + "/></svg>" + esc(order[k]) + "</span>";
  }
  return s + "</svg><p class=\"legend\">" + legend + "</p>";
}

// Horizontal bars, one per row: label, value, text; `timing` marks the chart as run-dependent.
struct Bar {
  std::string label, text, color;
  double value;
};
std::string bar_chart(const std::string& id, const std::string& title, const std::vector<Bar>& bars, bool timing, double zero = 0) {
  const double row = 18, top = 8, label_w = 210, right = 150;
  double hi = zero, lo = zero;
  for (const auto& b : bars) hi = std::max(hi, b.value), lo = std::min(lo, b.value);
  const double height = top * 2 + row * double(bars.size());
  std::string s = "<svg id=\"" + id + "\" viewBox=\"0 0 640 " + fixed(height, 0) + "\" role=\"img\" aria-label=\"" + esc(title) + "\"" +
                  (timing ? " data-timing=\"1\"" : "") + "><title>" + esc(title) + "</title>";
  const double x0 = label_w, x1 = 640 - right;
  auto px = [&](double v) { return hi > lo ? x0 + (v - lo) / (hi - lo) * (x1 - x0) : x0; };
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double y = top + row * double(i);
    const double a = px(std::min(b.value, zero)), w = std::fabs(px(b.value) - px(zero));
    s += "<text x=\"" + fixed(label_w - 6, 1) + "\" y=\"" + fixed(y + 13, 1) + "\" text-anchor=\"end\">" + esc(b.label) + "</text>";
    s += "<rect class=\"bar\" x=\"" + fixed(a, 1) + "\" y=\"" + fixed(y + 3, 1) + "\" width=\"" + fixed(w, 1) + "\" height=\"" + fixed(row - 6, 1) +
         "\" fill=\"" + b.color + "\"/>";
    s += "<text x=\"" + fixed(std::max(px(b.value), px(zero)) + 4, 1) + "\" y=\"" + fixed(y + 13, 1) + "\">" + esc(b.text) + "</text>";
  }
  return s + "</svg>";
}

std::string confusion_table(const SweepResult& r, const SweepVariant& v) {
  const int64_t n = r.classes;
  if (n <= 0 || v.confusion.size() != size_t(n * n) || r.float_confusion.size() != size_t(n * n)) return "";
  std::string s = "<table class=\"confusion\"><caption>" + esc(v.name) +
                  " minus float: test samples per true class (rows) and predicted class (columns)</caption><tr><th></th>";
  for (int64_t c = 0; c < n; ++c) s += "<th>" + std::to_string(c) + "</th>";
  s += "</tr>";
  for (int64_t t = 0; t < n; ++t) {
    s += "<tr><th>" + std::to_string(t) + "</th>";
    for (int64_t c = 0; c < n; ++c) {
      const int64_t d = v.confusion[size_t(t * n + c)] - r.float_confusion[size_t(t * n + c)];
      // More on the diagonal or fewer off it is better (green); the other way is worse (red).
      const bool better = (t == c) == (d > 0);
      const std::string cls = d == 0 ? "same" : better ? "better" : "worse";
      s += "<td class=\"" + cls + "\">" + (d > 0 ? "+" : "") + std::to_string(d) + "</td>";
    }
    s += "</tr>";
  }
  return s + "</table>";
}

const char* kStyle = R"(body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#1b1b1b}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px}
svg{width:100%;height:auto;font-size:11px;background:#fff}svg text{fill:#333}svg .label{font-size:12px;fill:#111}
.grid{stroke:#e5e5e5}.axis{stroke:#555}.front{fill:none;stroke:#222;stroke-width:1.5;stroke-dasharray:5 3}
.float-point{fill:#000}.float-line{stroke:#000;stroke-dasharray:3 3}.series{fill:none;stroke-width:2}.point-label{font-size:10px}
.on-front{stroke:#000;stroke-width:1.5}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
.variants{display:block;overflow-x:auto}.variants td:first-child,.variants td:last-child{text-align:left}
code{font-size:12px;white-space:nowrap}.confusion td.better{background:#d3f0d8}.confusion td.worse{background:#f6d0cf}.confusion td.same{color:#999}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{margin:0;text-align:center;font-size:12px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.swatch{width:24px;height:8px;margin-right:4px}
.variants td:first-child{white-space:nowrap}.thumbs img{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ccc}.note{color:#555;font-size:13px}
@media print{body{max-width:none;font-size:11px}.grid2{display:block}svg{page-break-inside:avoid;max-height:45vh}code{white-space:normal}})";

}  // namespace

void write_sweep_report(const SweepResult& r, const std::string& path) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">";
  h += "<title>lowbit sweep: " + esc(r.model_path) + "</title><style>" + std::string(kStyle) + "</style></head><body>\n";
  h += "<h1>Quantization sweep of " + esc(r.model_path.empty() ? "a model" : r.model_path) + "</h1>";
  size_t measured = 0;
  for (const auto& v : r.variants) measured += v.measured;
  h += "<p class=\"note\">Data " + esc(r.data_path) + ": " + std::to_string(r.test_samples) + " test samples, " +
       std::to_string(r.validation_samples) + " validation samples (the end of the training split). Float model: test accuracy <b>" +
       fixed(r.float_test_accuracy * 100, 2) + "%</b>, " + bytes_text(r.float_file_bytes) + ". " + std::to_string(measured) + " of " +
       std::to_string(r.variants.size()) + " variants measured" + (r.complete ? "" : " (the time budget stopped the sweep: run it again to finish)") +
       ". Timing figures (latency, throughput) depend on the machine; every other figure is exact for this data.</p>\n";

  h += "<div class=\"grid2\"><section><h2>Accuracy against size</h2>" + size_chart(r) +
       "<p class=\"note\">Each point a variant (blue full, red dynamic, green partial, purple accuracy-driven search); black square: "
       "float. The dashed line joins the Pareto front: no other variant is both smaller and more accurate.</p></section>";
  h += "<section><h2>Accuracy against weight bits</h2>" + bits_chart(r) + "<p class=\"note\">Dotted black line: float accuracy.</p></section></div>\n";

  std::vector<Bar> latency, throughput;
  latency.push_back({"float", fixed(r.float_batch1_latency_us, 1) + " us", "#000", r.float_batch1_latency_us});
  throughput.push_back({"float", fixed(r.float_batch256_images_per_second, 0) + " /s", "#000", r.float_batch256_images_per_second});
  for (const auto& v : r.variants) {
    if (!v.measured) continue;
    latency.push_back({v.name, fixed(v.batch1_latency_us, 1) + " us", color_of(v), v.batch1_latency_us});
    throughput.push_back({v.name, fixed(v.batch256_images_per_second, 0) + " /s", color_of(v), v.batch256_images_per_second});
  }
  h += "<div class=\"grid2\"><section><h2>Batch-1 latency</h2>" + bar_chart("chart-latency", "batch-1 latency per variant (microseconds)", latency, true) +
       "</section><section><h2>Batch-256 throughput</h2>" +
       bar_chart("chart-throughput", "batch-256 throughput per variant (samples per second)", throughput, true) + "</section></div>\n";

  if (r.chosen >= 0) {
    const SweepVariant& c = r.variants[size_t(r.chosen)];
    h += "<h2>Layer by layer: " + esc(c.name) + "</h2><p class=\"note\">The variant shown here: " +
         (c.drop_points <= 0.5 ? "the smallest within 0.5 points of float" : "the most accurate (none is within 0.5 points of float)") +
         " (test accuracy " + fixed(c.test_accuracy * 100, 2) + "%, " + bytes_text(c.file_bytes) + ").</p>";
    std::vector<Bar> sqnr, sensitivity;
    for (const auto& l : c.layers) {
      const double db = std::isfinite(l.sqnr_db) ? std::min(l.sqnr_db, 99.0) : 99.0;
      sqnr.push_back({l.layer, fixed(db, 1) + " dB, cos " + fixed(l.cosine, 5), "#1f5fa8", db});
      if (l.has_sensitivity)
        sensitivity.push_back({l.layer, fixed(l.sensitivity_drop_points, 2) + " pts", l.sensitivity_drop_points > 0 ? "#c7342f" : "#2b8a3e",
                               l.sensitivity_drop_points});
    }
    h += "<div class=\"grid2\"><section><h3>Output SQNR and cosine against float</h3>" +
         bar_chart("chart-layers", "per-layer SQNR (dB) of " + c.name, sqnr, false) + "</section>";
    if (!sensitivity.empty())
      h += "<section><h3>Sensitivity: validation accuracy drop with only this layer quantized</h3>" +
           bar_chart("chart-sensitivity", "per-layer sensitivity (points) of " + c.name, sensitivity, false) +
           "<p class=\"note\">Round-to-nearest at these bits and granularity.</p></section>";
    h += "</div>\n<h2>What changed: confusion matrix and samples</h2>" + confusion_table(r, c);
    if (!r.thumbnails.empty()) {
      h += "<p class=\"note\">Test samples the float model classifies right and " + esc(c.name) + " wrong (true class &rarr; predicted), the first " +
           std::to_string(r.thumbnails.size()) + ":</p><div class=\"thumbs\">";
      for (size_t i = 0; i < r.thumbnails.size(); ++i)
        h += "<figure><img alt=\"sample\" src=\"data:image/png;base64," + base64(png_gray(r.thumbnails[i], r.image_height, r.image_width)) +
             "\"><figcaption>" + std::to_string(r.thumbnail_labels[i]) + " &rarr; " + std::to_string(r.thumbnail_predictions[i]) +
             "</figcaption></figure>";
      h += "</div>\n";
    }
  }

  h += "<h2>Every variant</h2><table class=\"variants\"><tr><th>variant</th><th>mode</th><th>bits</th><th>rounding</th><th>granularity</th>"
       "<th>test acc %</th><th>val acc %</th><th>drop pts</th><th>size</th><th>bits/weight</th><th>latency us</th><th>images/s</th>"
       "<th>front</th><th>command</th></tr>";
  h += "<tr><td>float</td><td>-</td><td>32</td><td>-</td><td>-</td><td>" + fixed(r.float_test_accuracy * 100, 2) + "</td><td>" +
       fixed(r.float_validation_accuracy * 100, 2) + "</td><td>0.00</td><td>" + bytes_text(r.float_file_bytes) + "</td><td>32.00</td><td data-timing=\"1\">" +
       fixed(r.float_batch1_latency_us, 1) + "</td><td data-timing=\"1\">" + fixed(r.float_batch256_images_per_second, 0) + "</td><td></td><td></td></tr>";
  for (const auto& v : r.variants) {
    h += "<tr><td>" + esc(v.name) + "</td><td>" + esc(v.mode) + "</td><td>" + (v.bits ? std::to_string(v.bits) : "mixed") + "</td><td>" + esc(v.rounding) +
         "</td><td>" + esc(v.granularity) + "</td>";
    if (v.measured)
      h += "<td>" + fixed(v.test_accuracy * 100, 2) + "</td><td>" + fixed(v.validation_accuracy * 100, 2) + "</td><td>" + fixed(v.drop_points, 2) +
           "</td><td>" + bytes_text(v.file_bytes) + "</td><td>" + fixed(v.bits_per_weight, 2) + "</td><td data-timing=\"1\">" +
           fixed(v.batch1_latency_us, 1) + "</td><td data-timing=\"1\">" + fixed(v.batch256_images_per_second, 0) + "</td><td>" +
           (v.on_front ? "&#9679;" : "") + "</td>";
    else
      h += "<td colspan=\"8\">" + esc(v.skipped.empty() ? "not measured yet" : "skipped: " + v.skipped) + "</td>";
    h += "<td><code>" + esc(v.command) + "</code></td></tr>";
  }
  h += "</table>\n<p class=\"note\">Made by lowbit sweep; every figure is also in its --json output.</p></body></html>\n";
  files::write_file_atomically(path, h);
}

}  // namespace lowbit
