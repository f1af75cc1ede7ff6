// Writes <model>.expected: the outputs of a model on 16 synthetic images (f32, little-endian).
#include <cstdio>
#include <fstream>
#include "lowbit/lowbit.h"
int main(int argc, char** argv) {
  for (int a = 1; a < argc; ++a) {
    lowbit::Graph g = lowbit::load_model(argv[a]);
    const float scale = lowbit::input_scale(g);
    lowbit::Executor run(g);
    lowbit::Tensor& x = run.input(g.inputs[0].name);
    const int64_t n = 16;
    x = lowbit::Tensor(lowbit::DType::F32, {n, 28, 28});
    float* p = x.data<float>();
    for (int64_t i = 0; i < n * 784; ++i) p[i] = static_cast<float>(static_cast<uint8_t>((i * 131 + (i / 784) * 17) % 256)) * scale;
    run.forward();
    const lowbit::Tensor& y = run.value(g.outputs[0]);
    std::ofstream out(std::string(argv[a]) + ".expected", std::ios::binary);
    out.write(static_cast<const char*>(y.raw()), y.nbytes());
    std::printf("%s: %s %s\n", argv[a], lowbit::name_of(y.dtype()), lowbit::to_string(y.shape()).c_str());
  }
}
