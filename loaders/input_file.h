// Reading a file a user named (a model, an image, a plan, a list, a tensor), with
// the errors a user needs: which file, and whether it is missing, unreadable or a
// folder (a stream opened on a folder fails with "basic_filebuf::underflow").
#pragma once

#include <string>

namespace repshare {

// The bytes of the file at path. Throws Io: "cannot open <what> '<path>': <reason>",
// or "<what> '<path>' is a folder, not a file".
std::string read_input_file(const std::string& path, const char* what);

}  // namespace repshare
