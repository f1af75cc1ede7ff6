// Builds a tiny model with the installed library, saves and reloads it.
#include <lowbit/lowbit.h>

#include <cstdio>
#include <filesystem>

int main() {
  lowbit::Graph model = lowbit::build_model(lowbit::parse_arch("16-8-3"), {4, 4}, 3, 0);
  std::string path = (std::filesystem::temp_directory_path() / "lowbit-consumer.lbm").string();
  lowbit::save_model(model, path);
  lowbit::Graph back = lowbit::load_model(path);
  std::filesystem::remove(path);
  std::printf("consumer: %lld parameters\n", static_cast<long long>(back.parameter_count()));
  return back.parameter_count() == 16 * 8 + 8 + 8 * 3 + 3 ? 0 : 1;
}
