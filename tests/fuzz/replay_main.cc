// A main() for fuzz targets outside libFuzzer (any compiler): runs
// LLVMFuzzerTestOneInput on every file of the given files/directories (the
// seed corpus), then on `--random=N` pseudo-random inputs derived from the
// corpus by a fixed-seed mutator (byte flips, inserts, truncation, splices)
// plus N purely random ones. Deterministic; a failing input is written to
// $TEST_UNDECLARED_OUTPUTS_DIR (or /tmp) so that it can be replayed with the
// libFuzzer binary. This is what `bazel test //...` (and --config=asan)
// runs; scripts/fuzz.sh runs the real coverage-guided fuzzers.
#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string g_current;  // the input being run, saved by the abort handler

void SaveCurrent() {
  const char* dir = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  const std::string path =
      std::string(dir != nullptr ? dir : "/tmp") + "/fuzz-replay-crash.bin";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(g_current.data(), 1, g_current.size(), f);
    std::fclose(f);
    std::fprintf(stderr, "replay: failing input saved to %s\n", path.c_str());
  }
}

void Run(const std::string& input) {
  g_current = input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                         input.size());
}

std::string Mutate(std::string s, const std::vector<std::string>& corpus,
                   std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 6) {
      case 0:  // flip a byte
        if (!s.empty())
          s[rng() % s.size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 1:  // insert a random byte
        s.insert(s.begin() + (s.empty() ? 0 : rng() % (s.size() + 1)),
                 static_cast<char>(rng()));
        break;
      case 2:  // truncate
        if (!s.empty()) s.resize(rng() % s.size());
        break;
      case 3:  // erase a range
        if (!s.empty()) {
          const size_t at = rng() % s.size();
          s.erase(at, rng() % (s.size() - at + 1));
        }
        break;
      case 4:  // splice in a piece of another input
        if (!corpus.empty()) {
          const std::string& o = corpus[rng() % corpus.size()];
          if (!o.empty()) {
            const size_t from = rng() % o.size();
            const size_t len = rng() % (o.size() - from + 1);
            s.insert(s.empty() ? 0 : rng() % (s.size() + 1), o, from, len);
          }
        }
        break;
      default:  // duplicate a range (repetition, nesting)
        if (!s.empty()) {
          const size_t at = rng() % s.size();
          s.insert(at, s.substr(at, rng() % 64));
        }
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGABRT, [](int) {
    SaveCurrent();
    std::signal(SIGABRT, SIG_DFL);
    std::abort();
  });
  long random = 0;
  std::vector<std::string> corpus;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--random=", 9) == 0) {
      random = std::atol(argv[i] + 9);
      continue;
    }
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(argv[i])) {
      for (const auto& e :
           std::filesystem::recursive_directory_iterator(argv[i])) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
    } else {
      files.push_back(argv[i]);
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      corpus.push_back(ss.str());
    }
  }
  for (const std::string& input : corpus) Run(input);
  std::mt19937_64 rng(20240611);
  for (long i = 0; i < random; ++i) {
    if (!corpus.empty())
      Run(Mutate(corpus[rng() % corpus.size()], corpus, rng));
    std::string bytes(rng() % 512, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    Run(bytes);
  }
  std::printf(
      "replay: %zu corpus inputs, %ld mutated + %ld random inputs: ok\n",
      corpus.size(), corpus.empty() ? 0 : random, random);
  return 0;
}
