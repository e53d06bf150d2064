// hello NAME [FILE...]: prints a greeting, then "<size> <fnv1a32 hex>" per FILE.
#include <cstdio>

#include "cc/checksum.h"
#include "cc/greet.h"

int main(int argc, char** argv) {
  const char* name = argc > 1 ? argv[1] : "world";
  std::printf("%s\n", Greet(name).c_str());
  for (int i = 2; i < argc; i++) {
    std::FILE* f = std::fopen(argv[i], "rb");
    if (f == nullptr) {
      std::perror(argv[i]);
      return 1;
    }
    unsigned char buf[4096];
    uint32_t hash = FNV1A32_INIT;
    unsigned long size = 0;
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
      hash = fnv1a32(hash, buf, n);
      size += n;
    }
    std::fclose(f);
    std::printf("%lu %08x\n", size, hash);
  }
  return 0;
}
