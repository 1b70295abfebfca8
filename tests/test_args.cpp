// The subcommands' option parsing (apps/args.h): every way a command line can be
// wrong is an Argument error naming the option, never a value silently ignored,
// wrapped or taken from the wrong place.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/args.h"
#include "engine/error.h"

namespace repshare {
namespace {

Args parse(std::vector<std::string> argv) { return Args(std::move(argv), {"json", "help"}); }

// Parsing argv, then what the command asks of it (use), must throw an Argument error
// whose message holds `message`.
void expect_argument_error(const std::vector<std::string>& argv, void (*use)(Args&),
                           const std::string& message) {
  std::string what;
  try {
    Args a = parse(argv);
    use(a);
    a.finish();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Argument) << e.what();
    what = e.what();
  }
  EXPECT_NE(what.find(message), std::string::npos) << "'" << message << "' not in '" << what << "'";
}

void nothing(Args&) {}

TEST(Args, ValuesSwitchesAndPositionals) {
  Args a = parse({"in.jpg", "--top", "3", "--json", "--scale=0.5", "--limit", "-2", "b.jpg"});
  EXPECT_EQ(a.get_int("top", 5), 3);
  EXPECT_EQ(a.get_double("scale", 1.0), 0.5);
  EXPECT_EQ(a.get_int("limit", 0), -2);  // one dash: a negative number, not an option
  EXPECT_EQ(a.get_int("runs", 7), 7);
  EXPECT_TRUE(a.flag("json"));
  EXPECT_FALSE(a.flag("help"));
  EXPECT_EQ(a.positionals(), (std::vector<std::string>{"in.jpg", "b.jpg"}));
  EXPECT_NO_THROW(a.finish());
  Args repeated = parse({"--model", "a.onnx", "--model", "b.onnx"});
  EXPECT_EQ(repeated.all("model"), (std::vector<std::string>{"a.onnx", "b.onnx"}));
  Args ended = parse({"--top", "1", "--", "--x.jpg", "--json"});
  EXPECT_FALSE(ended.flag("json"));
  EXPECT_EQ(ended.positionals(), (std::vector<std::string>{"--x.jpg", "--json"}));
}

TEST(Args, EveryMistakeNamesItsOption) {
  auto top = [](Args& a) { a.get_int("top", 5); };
  expect_argument_error({"--json=1"}, nothing, "--json is a switch");
  expect_argument_error({"--top", ""}, top, "--top has an empty value");
  expect_argument_error({"--top="}, top, "--top has an empty value");
  expect_argument_error({"--out", "--json"}, nothing,
                        "--out needs a value and got the option --json");
  expect_argument_error({"--top", "2", "--top", "x"}, top, "--top is given more than once");
  expect_argument_error({"--top", "4294967297"}, top, "--top is out of range");
  expect_argument_error({"--top", "3x"}, top, "--top expects an integer");
  expect_argument_error(
      {"--scale", "half"}, [](Args& a) { a.get_double("scale", 1); }, "--scale expects a number");
  expect_argument_error({"--frob", "1"}, nothing, "unknown option --frob");
  expect_argument_error({"--quiet"}, nothing, "unknown option --quiet");
  expect_argument_error(
      {}, [](Args& a) { a.require("model"); }, "missing required option --model");
  // A last option without its value: "needs a value" where the command takes it,
  // "unknown option" where it does not.
  expect_argument_error({"a.jpg", "--top"}, top, "--top needs a value");
  expect_argument_error(
      {"a.jpg", "--model"}, [](Args& a) { a.require("model"); }, "--model needs a value");
  expect_argument_error({"a.jpg", "--frob"}, top, "unknown option --frob");
}

}  // namespace
}  // namespace repshare
