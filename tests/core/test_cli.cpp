// run_cli (core/cli.hpp), the exit-code contract every program shares: 0 success, 2 bad input
// (InputError, cxxopts errors, an unparsable value named by its flag), 1 anything else; out of
// memory (OutOfMemoryError or the host's std::bad_alloc) adds the program's hint of flags that
// use less, and nothing else does. merge_rank_failures: what the root of an mpiexec job prints
// for a setup that failed on some ranks (agree_on_failure, run under MPI in test_data_parallel).
#include "common/catch.hpp"

#include <cmath>
#include <filesystem>
#include <iostream>
#include <new>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/distributed.hpp"

using namespace gpt2cc;

namespace {

struct Outcome {
  int code = -1;
  std::string err;  // what went to std::cerr
};

// Runs main(argc, argv) under run_cli with argv = {"prog", args...} and the given hint, capturing
// std::cerr.
template <class Main>
Outcome run_main(Main main, std::vector<std::string> args, const char* hint = "less memory: --small") {
  std::vector<char*> argv{const_cast<char*>("prog")};
  for (std::string& a : args) argv.push_back(a.data());
  std::ostringstream captured;
  std::streambuf* old = std::cerr.rdbuf(captured.rdbuf());
  Outcome o;
  o.code = run_cli("prog", static_cast<int>(argv.size()), argv.data(), main, hint);
  std::cerr.rdbuf(old);
  o.err = captured.str();
  return o;
}

// The same for a `body` that takes no arguments.
template <class Body>
Outcome run(Body body, std::vector<std::string> args = {}, const char* hint = "less memory: --small") {
  return run_main([&](int, char**) { return body(); }, std::move(args), hint);
}

}  // namespace

TEST_CASE("run_cli: exit codes and messages", "[cli]") {
  CHECK(run([] { return 0; }).code == 0);
  CHECK(run([] { return 3; }).code == 3);  // the program's own code passes through

  const Outcome input = run([]() -> int { throw InputError("--steps must be >= 1, got 0"); });
  CHECK(input.code == 2);
  CHECK(input.err == "prog: --steps must be >= 1, got 0\n");

  const Outcome internal = run([]() -> int { throw Error("checkpoint write failed"); });
  CHECK(internal.code == 1);
  CHECK(internal.err == "prog: error: checkpoint write failed\n");  // no memory hint

  const Outcome device = run([]() -> int { throw OutOfMemoryError("CUDA out of memory on device 0"); });
  CHECK(device.code == 1);
  CHECK(device.err == "prog: error: CUDA out of memory on device 0\nprog: less memory: --small\n");

  const Outcome host = run([]() -> int { throw std::bad_alloc(); });
  CHECK(host.code == 1);
  CHECK_THAT(host.err, Catch::Contains("prog: error: out of host memory") && Catch::Contains("prog: less memory"));

  // A thread that cannot start (std::thread's EAGAIN: memory or the thread limit) is out of memory
  // too; another system error is not.
  const Outcome thread = run([]() -> int {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "thread");
  });
  CHECK(thread.code == 1);
  CHECK_THAT(thread.err, Catch::StartsWith("prog: error: cannot start a thread: Resource temporarily unavailable (too "
                                           "little memory, or the thread limit reached)") &&
                             Catch::EndsWith("prog: less memory: --small\n"));
  const Outcome busy = run([]() -> int {
    throw std::system_error(std::make_error_code(std::errc::device_or_resource_busy), "lock");
  });
  CHECK(busy.code == 1);
  CHECK_THAT(busy.err, !Catch::Contains("less memory"));

  const Outcome no_hint = run([]() -> int { throw OutOfMemoryError("out of memory"); }, {}, nullptr);
  CHECK(no_hint.code == 1);
  CHECK(no_hint.err == "prog: error: out of memory\n");

  // std::filesystem's errors: a path that names no file is bad input, named with its reason; an
  // I/O error stays exit 1.
  const std::string loop = test::temp_dir("cli_link_loop") + "/loop";
  std::filesystem::remove(loop);
  std::filesystem::create_symlink(loop, loop);
  const Outcome looped = run([&]() -> int { return std::filesystem::exists(loop + "/vocab.json") ? 0 : 4; });
  CHECK(looped.code == 2);
  CHECK(looped.err == "prog: " + loop + "/vocab.json: Too many levels of symbolic links\n");
  const Outcome io = run([]() -> int {
    throw std::filesystem::filesystem_error("status", "/x", std::make_error_code(std::errc::io_error));
  });
  CHECK(io.code == 1);
  CHECK_THAT(io.err, Catch::StartsWith("prog: error: ") && Catch::Contains("/x"));
}

// cxxopts 3.1 (Debian 12) quotes the value with curved quotes, 3.2 (Debian 13) with straight ones:
// each machine's tests run the other's too.
TEST_CASE("unparsed_value: the value in either cxxopts' message", "[cli]") {
  CHECK(unparsed_value("Argument \u2018abc\u2019 failed to parse") == "abc");
  CHECK(unparsed_value("Argument 'abc' failed to parse") == "abc");
  CHECK(unparsed_value("Argument '' failed to parse") == "");
  CHECK(unparsed_value("Argument 'it's' failed to parse") == "it's");
  CHECK_FALSE(unparsed_value("Argument abc failed to parse"));
  CHECK_FALSE(unparsed_value("Option 'rl' does not exist"));
}

TEST_CASE("run_cli: cxxopts errors exit 2, an unparsable value is named by its flag", "[cli]") {
  auto parse = [](int argc, char** argv) {
    cxxopts::Options cli("prog", "test");
    // A float flag: an int one makes GCC 12 warn (-Wrestrict) inside cxxopts' integer parser.
    cli.add_options()("lr", "learning rate", cxxopts::value<float>()->default_value("1"));
    const auto args = cli.parse(argc, argv);
    return args["lr"].as<float>() == 0.5f ? 0 : 4;
  };
  auto run_parse = [&](std::vector<std::string> args) { return run_main(parse, std::move(args)); };
  CHECK(run_parse({"--lr", "0.5"}).code == 0);
  const Outcome unknown = run_parse({"--rl", "0.5"});
  CHECK(unknown.code == 2);
  CHECK_THAT(unknown.err, Catch::Contains("rl") && Catch::Contains("(see prog --help)"));
  const Outcome bad_value = run_parse({"--lr", "abc"});
  CHECK(bad_value.code == 2);
  CHECK_THAT(bad_value.err, Catch::Contains("--lr: 'abc' is not a valid value"));
  const Outcome bad_value_eq = run_parse({"--lr=abc"});
  CHECK(bad_value_eq.code == 2);
  CHECK_THAT(bad_value_eq.err, Catch::Contains("--lr: 'abc' is not a valid value"));
}

// A bad value that another flag also got, and parsed: the flag that cannot take it is named.
TEST_CASE("parse_flags: a bad value is named by the flag that cannot take it", "[cli]") {
  auto parse = [](int argc, char** argv) {
    cxxopts::Options cli("prog", "test");
    cli.add_options()("lr", "learning rate", cxxopts::value<double>()->default_value("1"))(
        "batch-size", "rows", cxxopts::value<long>()->default_value("1"))("steps", "steps",
                                                                          cxxopts::value<long>()->default_value("1"))(
        "shuffle", "a switch", cxxopts::value<bool>()->default_value("true")->implicit_value("true"))(
        "name", "a string", cxxopts::value<std::string>());
    parse_flags(cli, argc, argv);
    return 0;
  };
  auto run_parse = [&](std::vector<std::string> args) { return run_main(parse, std::move(args)); };
  const Outcome two = run_parse({"--lr", "0.5", "--batch-size", "0.5"});
  CHECK(two.code == 2);
  CHECK_THAT(two.err, Catch::Contains("--batch-size: '0.5' is not a valid value (see prog --help)"));
  const Outcome two_eq = run_parse({"--lr=0.5", "--batch-size=0.5"});
  CHECK(two_eq.code == 2);
  CHECK_THAT(two_eq.err, Catch::Contains("--batch-size: '0.5' is not a valid value"));
  const Outcome switch_value = run_parse({"--steps", "2", "--shuffle=2"});
  CHECK(switch_value.code == 2);
  CHECK_THAT(switch_value.err, Catch::Contains("--shuffle: '2' is not a valid value"));
  // A switch followed by a word takes its implicit value: not the flag that failed.
  const Outcome after_switch = run_parse({"--shuffle", "x", "--steps", "x"});
  CHECK(after_switch.code == 2);
  CHECK_THAT(after_switch.err, Catch::Contains("--steps: 'x' is not a valid value"));
  CHECK(run_parse({"--lr", "0.5", "--batch-size", "5"}).code == 0);
  // A word that looks like a flag but is another flag's value, followed by the failing value's text.
  const Outcome value_like_flag = run_parse({"--name", "--steps", "0.5", "--batch-size", "0.5"});
  CHECK(value_like_flag.code == 2);
  CHECK_THAT(value_like_flag.err, Catch::Contains("--batch-size: '0.5' is not a valid value"));
  const Outcome short_form = run_parse({"--name=x", "--steps=0.5"});
  CHECK(short_form.code == 2);
  CHECK_THAT(short_form.err, Catch::Contains("--steps: '0.5' is not a valid value"));
  // A bad value given without a flag (a positional number) is not blamed on the word before it.
  const auto parse_counted = [](int argc, char** argv) {
    cxxopts::Options cli("prog", "test");
    cli.add_options()("name", "a string", cxxopts::value<std::string>())("count", "a number",
                                                                         cxxopts::value<long>());
    cli.parse_positional({"count"});
    parse_flags(cli, argc, argv);
    return 0;
  };
  const Outcome positional = run_main(parse_counted, {"--name", "out.json", "x"});
  CHECK(positional.code == 2);
  CHECK_THAT(positional.err, Catch::Contains("'x' is not a valid value for an argument given without a flag"));
  // Many words before the bad one (the search bisects: a word at a time took minutes at 20k).
  std::vector<std::string> many(20000, "--name=n");
  many.insert(many.end(), {"--steps", "x"});
  const Outcome after_many = run_parse(many);
  CHECK(after_many.code == 2);
  CHECK_THAT(after_many.err, Catch::Contains("--steps: 'x' is not a valid value"));
}

TEST_CASE("parse_flags: an integer that does not fit its flag's type is refused, not wrapped", "[cli]") {
  // cxxopts 3.1 alone reads 10000000000 into an int as 1410065408 and 30000000000000000000 into a
  // uint64_t as 11553255926290448384 (its overflow check misses wraps).
  const auto parse = [](std::vector<std::string> args) {
    std::vector<char*> argv{const_cast<char*>("prog")};
    for (std::string& a : args) argv.push_back(a.data());
    cxxopts::Options cli("prog", "test");
    cli.add_options()("count", "an int", cxxopts::value<int>()->default_value("1"))(
        "steps", "a uint64_t", cxxopts::value<uint64_t>()->default_value("1"))(
        "name", "a string", cxxopts::value<std::string>()->default_value(""));
    return parse_flags(cli, static_cast<int>(argv.size()), argv.data());
  };
  CHECK(parse({"--count", "2147483647"})["count"].as<int>() == 2147483647);
  CHECK(parse({"--count", "-2147483648"})["count"].as<int>() == -2147483648);
  CHECK(parse({"--steps", "18446744073709551615"})["steps"].as<uint64_t>() == 18446744073709551615ull);
  CHECK(parse({"--name", "99999999999999999999999"})["name"].as<std::string>() == "99999999999999999999999");
  CHECK(parse({"--count", "4", "--count", "0"})["count"].as<int>() == 0);  // the last of a repeated flag
  // cxxopts 3.1 (Debian 12) lets most of these wrap, and check_integer_flags refuses them; cxxopts
  // 3.2 (Debian 13) refuses them itself, as values that failed to parse, and parse_flags names the
  // flag and its range: the same message either way.
  const auto count_range = [](const std::string& value) {
    return "--count: '" + value + "' is out of range (a whole number from -2147483648 to 2147483647)";
  };
  CHECK_THROWS_WITH(parse({"--count", "4", "--count", "10000000000"}), count_range("10000000000"));
  CHECK_THROWS_WITH(parse({"--count", "10000000000"}), count_range("10000000000"));
  CHECK_THROWS_WITH(parse({"--count=10000000000"}), count_range("10000000000"));
  CHECK_THROWS_WITH(parse({"--count", "-10000000000"}), count_range("-10000000000"));
  CHECK_THROWS_WITH(parse({"--count", "2147483648"}), count_range("2147483648"));  // cxxopts 3.1's own check
  CHECK_THROWS_WITH(parse({"--steps", "30000000000000000000"}),
                    "--steps: '30000000000000000000' is out of range (a whole number from 0 to 18446744073709551615)");
  CHECK_THROWS_WITH(parse({"--steps", "-1"}),
                    "--steps: '-1' is out of range (a whole number from 0 to 18446744073709551615)");
}

TEST_CASE("parse_flags: a number followed by anything else is refused for float and double flags", "[cli]") {
  // cxxopts alone reads "0.2oops" as 0.2 (a stringstream that stops at the first bad character).
  const auto parse = [](std::vector<std::string> args) {
    std::vector<char*> argv{const_cast<char*>("prog")};
    for (std::string& a : args) argv.push_back(a.data());
    cxxopts::Options cli("prog", "test");
    cli.add_options()("fraction", "a double", cxxopts::value<double>()->default_value("0.5"))(
        "rate", "a float", cxxopts::value<float>()->default_value("1"))(
        "name", "a string", cxxopts::value<std::string>()->default_value(""));
    return parse_flags(cli, static_cast<int>(argv.size()), argv.data());
  };
  CHECK(parse({"--fraction", "0.25"})["fraction"].as<double>() == 0.25);
  CHECK(parse({"--rate=1e-3"})["rate"].as<float>() == 1e-3f);
  CHECK(parse({"--rate", "-2"})["rate"].as<float>() == -2.0f);
  CHECK(parse({"--name", "0.2oops"})["name"].as<std::string>() == "0.2oops");
  CHECK_THROWS_MATCHES(parse({"--fraction", "0.2oops"}), InputError,
                       Catch::Message("--fraction: '0.2oops' is not a number"));
  CHECK_THROWS_MATCHES(parse({"--rate=3e-4x"}), InputError, Catch::Message("--rate: '3e-4x' is not a number"));
  CHECK_THROWS_AS(parse({"--fraction", "1", "--fraction", "0.5 "}), InputError);
  // Hex: the stringstream stops at the 'x' and stores 0, which strtod would have taken for 5.
  CHECK_THROWS_MATCHES(parse({"--fraction", "0x5"}), InputError, Catch::Message("--fraction: '0x5' is not a number"));
  CHECK_THROWS_MATCHES(parse({"--rate=0x1p-3"}), InputError, Catch::Message("--rate: '0x1p-3' is not a number"));
  CHECK(parse({"--fraction", "+0.75"})["fraction"].as<double>() == 0.75);
  CHECK(parse({"--fraction", "5e-1"})["fraction"].as<double>() == 0.5);
  CHECK(parse({"--fraction", ".5"})["fraction"].as<double>() == 0.5);
  CHECK_THROWS(parse({"--fraction", "1e999"}));  // out of range: cxxopts's own parse refuses it
  // A float flag's value below a float's range would be 0; a double flag holds it.
  CHECK_THROWS_MATCHES(parse({"--rate", "1e-50"}), InputError,
                       Catch::Message("--rate: '1e-50' is too small for a float (it would be 0)"));
  CHECK(parse({"--fraction", "1e-50"})["fraction"].as<double>() == 1e-50);
  CHECK(parse({"--rate", "0"})["rate"].as<float>() == 0.0f);
  CHECK(parse({"--rate", "1e-40"})["rate"].as<float>() > 0.0f);  // a subnormal float: kept
}

TEST_CASE("values_as_typed: each value of a repeated flag or positional whole, commas kept", "[cli]") {
  std::vector<std::string> args = {"prog", "--stop", "Hello, world", "a,b.txt", "--stop", "", "c.txt", "--stop", "x"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  cxxopts::Options cli("prog", "test");
  cli.add_options()("stop", "repeatable", cxxopts::value<std::vector<std::string>>())(
      "files", "positional", cxxopts::value<std::vector<std::string>>());
  cli.parse_positional({"files"});
  const cxxopts::ParseResult result = parse_flags(cli, static_cast<int>(argv.size()), argv.data());
  CHECK(values_as_typed(result, "stop") == std::vector<std::string>{"Hello, world", "", "x"});
  CHECK(values_as_typed(result, "files") == std::vector<std::string>{"a,b.txt", "c.txt"});
  CHECK(values_as_typed(result, "other").empty());
  // What cxxopts itself makes of them.
  CHECK(result["stop"].as<std::vector<std::string>>().size() == 4);
}

TEST_CASE("merge_rank_failures: each message once, after the ranks that had it", "[cli]") {
  using Lines = std::vector<std::string>;
  CHECK(merge_rank_failures("train", {"", "", ""}).empty());
  CHECK(merge_rank_failures("train", {"no shards", "no shards"}) == Lines{"train (all 2 ranks): no shards"});
  CHECK(merge_rank_failures("train", {"", "no shards", ""}) == Lines{"train (rank 1 of 3): no shards"});
  // Runs of ranks: "0-2" for three or more in a row, "6, 7" for two; messages in the order of
  // their first rank.
  CHECK(merge_rank_failures("train", {"a", "a", "a", "b", "", "a", "b", "b"}) ==
        Lines{"train (ranks 0-2, 5 of 8): a", "train (ranks 3, 6, 7 of 8): b"});
  // A message of several lines names its ranks on each, so none reads as another rank's.
  CHECK(merge_rank_failures("train", {"error: out of memory\nless memory: --small", ""}) ==
        Lines{"train (rank 0 of 2): error: out of memory", "train (rank 0 of 2): less memory: --small"});
}

TEST_CASE("agree_on_failure in one process: the step's own error, printed by run_cli", "[cli]") {
  auto group = ProcessGroup::single();
  int ran = 0;
  agree_on_failure(*group, "prog", 0, nullptr, nullptr, [&] { ++ran; });
  CHECK(ran == 1);
  const Outcome failed = run([&]() -> int {
    agree_on_failure(*group, "prog", 0, nullptr, nullptr, [] { throw InputError("no shards found at x"); });
    return 0;
  });
  CHECK(failed.code == 2);
  CHECK(failed.err == "prog: no shards found at x\n");
}

TEST_CASE("shell_quote: a path as a suggested command must hold it, read back by sh", "[cli]") {
  CHECK(shell_quote("runs/ts-d4") == "runs/ts-d4");
  CHECK(shell_quote("/a/b_c.d+e:f=g,h@i%j") == "/a/b_c.d+e:f=g,h@i%j");
  CHECK(shell_quote("sp ace/run ü") == "'sp ace/run ü'");
  CHECK(shell_quote("it's") == "'it'\\''s'");
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("$HOME;rm") == "'$HOME;rm'");
  // What sh makes of each quoted word is the word itself.
  for (const std::string word : {"sp ace/run ü", "it's", "a\"b\\c", "$(x)`y`", "~", "*"}) {
    INFO(word);
    FILE* pipe = ::popen(("printf %s " + shell_quote(word)).c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string out;
    char buf[256];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    ::pclose(pipe);
    CHECK(out == word);
  }
}

TEST_CASE("bench::median: the middle sample, or the mean of the two middle ones", "[cli]") {
  CHECK(bench::median(std::vector<double>{3, 1, 2}) == 2);
  CHECK(bench::median(std::vector<double>{60.7, 62.3}) == Approx(61.5));  // not the maximum of two
  CHECK(bench::median(std::vector<float>{4, 1, 3, 2}) == 2.5);
  CHECK(bench::median(std::vector<double>{7}) == 7);
  CHECK(std::isnan(bench::median(std::vector<double>{})));
}
