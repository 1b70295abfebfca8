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

// The message of the Argument error f throws ("" when it throws none).
template <typename F>
std::string argument_error(F f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Argument) << e.what();
    return e.what();
  }
  return "";
}

Args parse(std::vector<std::string> argv) { return Args(std::move(argv), {"json", "help"}); }

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
}

TEST(Args, EveryMistakeNamesItsOption) {
  EXPECT_NE(argument_error([] { parse({"--json=1"}); }).find("--json is a switch"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--top", ""});
            }).find("--top has an empty value"),
            std::string::npos);
  EXPECT_NE(argument_error([] { parse({"--top="}); }).find("--top has an empty value"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--out", "--json"});
            }).find("--out needs a value and got the option --json"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--runs", "2", "--runs", "x"}).get("runs");
            }).find("--runs is given more than once"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--top", "4294967297"}).get_int("top", 5);
            }).find("--top is out of range"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--top", "3x"}).get_int("top", 5);
            }).find("--top expects an integer"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--scale", "half"}).get_double("scale", 1);
            }).find("--scale expects a number"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"--frob", "1"}).finish();
            }).find("unknown option --frob"),
            std::string::npos);
  EXPECT_NE(argument_error([] { parse({"--quiet"}).finish(); }).find("unknown option --quiet"),
            std::string::npos);
  EXPECT_NE(
      argument_error([] { parse({}).require("model"); }).find("missing required option --model"),
      std::string::npos);
}

// A last option without its value: "needs a value" when the command takes it,
// "unknown option" when it does not.
TEST(Args, AValuelessLastOptionIsMissingItsValueOrUnknown) {
  EXPECT_NE(argument_error([] {
              parse({"a.jpg", "--top"}).get_int("top", 5);
            }).find("--top needs a value"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              parse({"a.jpg", "--model"}).require("model");
            }).find("--model needs a value"),
            std::string::npos);
  EXPECT_NE(argument_error([] {
              Args a = parse({"a.jpg", "--frob"});
              a.get("top");
              a.finish();
            }).find("unknown option --frob"),
            std::string::npos);
}

}  // namespace
}  // namespace repshare
