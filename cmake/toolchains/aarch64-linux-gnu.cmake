# Cross-compile for 64-bit Arm Linux on a Debian x86_64 machine with Debian's
# g++-aarch64-linux-gnu, against arm64 libraries installed through multiarch
# (`dpkg --add-architecture arm64`, then `apt-get install libprotobuf-dev:arm64
# libopenblas-dev:arm64 libjpeg62-turbo-dev:arm64`; scripts/edge-build.sh does both).
#
# Multiarch puts the target's libraries in /usr/lib/aarch64-linux-gnu and its
# arch-specific headers in /usr/include/aarch64-linux-gnu, beside the host's
# x86_64 ones under the same root, so there is no sysroot to point
# CMAKE_FIND_ROOT_PATH at: CMAKE_LIBRARY_ARCHITECTURE makes every find_library
# and find_path look in the aarch64 folders, and programs (protoc) are the host's.
# protoc therefore runs on x86_64 and must be the same protobuf version as the
# arm64 libprotobuf it generates code for (Debian bookworm: 3.21.12 for both).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# try_run and anything else that executes target binaries at build time.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
