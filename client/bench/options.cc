#include "client/bench/options.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/testing/messages.pb.h"
#include "sluice/demo/v1/ticker.pb.h"

namespace sluice::bench {
namespace {

constexpr int64_t kMaxPayloadBytes = int64_t{64} << 20;
constexpr char kUnaryMethod[] = "/grpc.testing.TestService/UnaryCall";
constexpr char kTickerMethod[] = "/sluice.demo.v1.Ticker/Subscribe";
constexpr char kPingPongMethod[] = "/grpc.testing.TestService/FullDuplexCall";

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

absl::Status CheckRange(const char* flag, int64_t value, int64_t lo,
                        int64_t hi) {
  if (value < lo || value > hi) {
    return Invalid(absl::StrCat("--", flag, "=", value, ": must be in [", lo,
                                ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CallKind> ParseKind(const std::string& kind) {
  if (kind == "unary") return CallKind::kUnary;
  if (kind == "server_stream") return CallKind::kServerStream;
  if (kind == "bidi") return CallKind::kBidi;
  return Invalid(
      absl::StrCat("--kind=", kind, ": must be unary, server_stream or bidi"));
}

bool ValidMethod(const std::string& method) {
  // "/service/method", both parts non-empty.
  if (method.size() < 4 || method[0] != '/') return false;
  const size_t slash = method.find('/', 1);
  return slash != std::string::npos && slash > 1 && slash + 1 < method.size() &&
         method.find('/', slash + 1) == std::string::npos;
}

}  // namespace

const char* CallKindName(CallKind kind) {
  switch (kind) {
    case CallKind::kUnary:
      return "unary";
    case CallKind::kServerStream:
      return "server_stream";
    case CallKind::kBidi:
      return "bidi";
  }
  return "unknown";
}

absl::StatusOr<std::pair<std::string, std::string>> ParseHeader(
    const std::string& header) {
  const size_t colon = header.find(':');
  if (colon == std::string::npos || colon == 0) {
    return Invalid(absl::StrCat("--header=", header, ": expected key:value"));
  }
  std::string key = absl::AsciiStrToLower(header.substr(0, colon));
  std::string value = header.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.erase(0, 1);
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) {
      return Invalid(absl::StrCat("--header=", header, ": key '", key,
                                  "' may only hold a-z 0-9 - _ ."));
    }
  }
  if (absl::StartsWith(key, "grpc-")) {
    return Invalid(
        absl::StrCat("--header=", header, ": grpc-* keys are reserved"));
  }
  if (!absl::EndsWith(key, "-bin")) {
    for (char c : value) {
      if (c < 0x20 || c > 0x7e) {
        return Invalid(absl::StrCat(
            "--header=", header,
            ": value must be printable ASCII (or use a -bin key)"));
      }
    }
  }
  return std::make_pair(std::move(key), std::move(value));
}

absl::StatusOr<ResolvedOptions> Resolve(const BenchOptions& options) {
  ResolvedOptions out;
  out.options = options;

  if (options.target.empty()) return Invalid("--target=HOST:PORT is required");
  if (options.target.find(':') == std::string::npos) {
    return Invalid(
        absl::StrCat("--target=", options.target, ": expected HOST:PORT"));
  }
  if (absl::Status s = CheckRange("threads", options.threads, 1, 64); !s.ok())
    return s;
  if (absl::Status s = CheckRange("connections", options.connections, 1, 1000);
      !s.ok())
    return s;
  if (absl::Status s = CheckRange("concurrency", options.concurrency, 1, 10000);
      !s.ok())
    return s;
  if (absl::Status s =
          CheckRange("max_inflight", options.max_inflight, 1, 1000000);
      !s.ok())
    return s;
  if (!(options.rate >= 0) || options.rate > 10e6) {
    return Invalid(absl::StrCat("--rate=", options.rate,
                                ": must be in [0, 1e7] calls/s (0: closed "
                                "loop)"));
  }
  if (options.duration < absl::ZeroDuration()) {
    return Invalid("--duration must not be negative");
  }
  if (options.calls < 0) return Invalid("--calls must not be negative");
  if (options.timeout <= absl::ZeroDuration()) {
    return Invalid("--timeout must be positive");
  }
  if (options.connect_timeout <= absl::ZeroDuration()) {
    return Invalid("--connect_timeout must be positive");
  }
  if (absl::Status s = CheckRange("request_bytes", options.request_bytes, 0,
                                  kMaxPayloadBytes);
      !s.ok())
    return s;
  if (absl::Status s = CheckRange("response_bytes", options.response_bytes, 0,
                                  kMaxPayloadBytes);
      !s.ok())
    return s;
  if (absl::Status s =
          CheckRange("stream_messages", options.stream_messages, 1, 1 << 30);
      !s.ok())
    return s;
  if (absl::Status s =
          CheckRange("pingpong_rounds", options.pingpong_rounds, 1, 1 << 30);
      !s.ok())
    return s;

  out.duration = options.duration;
  if (options.duration == absl::ZeroDuration() && options.calls == 0) {
    out.duration = absl::Seconds(10);
  }

  for (const std::string& header : options.headers) {
    absl::StatusOr<std::pair<std::string, std::string>> kv =
        ParseHeader(header);
    if (!kv.ok()) return kv.status();
    out.metadata.push_back(*std::move(kv));
  }

  const bool have_payload =
      options.payload_set || !options.payload_file.empty();
  if (options.payload_set && !options.payload_file.empty()) {
    return Invalid("give the payload either directly or by --payload_file");
  }
  if (have_payload && !options.scenario.empty()) {
    return Invalid(absl::StrCat("--payload_file and --scenario=",
                                options.scenario, " exclude each other"));
  }

  std::string scenario_method;
  CallKind scenario_kind = CallKind::kUnary;
  if (have_payload) {
    if (options.payload_set) {
      out.payload = options.payload;
    } else {
      std::ifstream in(options.payload_file, std::ios::binary);
      if (!in) {
        return Invalid(absl::StrCat("--payload_file=", options.payload_file,
                                    ": cannot open"));
      }
      std::stringstream contents;
      contents << in.rdbuf();
      if (in.bad()) {
        return Invalid(absl::StrCat("--payload_file=", options.payload_file,
                                    ": cannot read"));
      }
      out.payload = contents.str();
    }
    scenario_method = kUnaryMethod;
  } else {
    const std::string scenario =
        options.scenario.empty() ? "unary" : options.scenario;
    if (scenario == "unary") {
      grpc::testing::SimpleRequest request;
      request.set_response_size(static_cast<int32_t>(options.response_bytes));
      if (options.request_bytes > 0) {
        request.mutable_payload()->mutable_body()->assign(
            static_cast<size_t>(options.request_bytes), 'x');
      }
      out.payload = request.SerializeAsString();
      scenario_method = kUnaryMethod;
      scenario_kind = CallKind::kUnary;
    } else if (scenario == "ticker") {
      sluice::demo::v1::SubscribeRequest request;
      request.set_count(static_cast<uint32_t>(options.stream_messages));
      request.set_interval_ms(0);
      request.set_payload_bytes(static_cast<uint32_t>(options.response_bytes));
      out.payload = request.SerializeAsString();
      scenario_method = kTickerMethod;
      scenario_kind = CallKind::kServerStream;
    } else if (scenario == "pingpong") {
      grpc::testing::StreamingOutputCallRequest request;
      request.add_response_parameters()->set_size(
          static_cast<int32_t>(options.response_bytes));
      if (options.request_bytes > 0) {
        request.mutable_payload()->mutable_body()->assign(
            static_cast<size_t>(options.request_bytes), 'x');
      }
      out.payload = request.SerializeAsString();
      scenario_method = kPingPongMethod;
      scenario_kind = CallKind::kBidi;
    } else {
      return Invalid(absl::StrCat("--scenario=", scenario,
                                  ": must be unary, ticker or pingpong"));
    }
  }

  out.method = options.method.empty() ? scenario_method : options.method;
  if (!ValidMethod(out.method)) {
    return Invalid(absl::StrCat("--method=", out.method,
                                ": expected /package.Service/Method"));
  }
  if (options.kind.empty()) {
    out.kind = scenario_kind;
  } else {
    absl::StatusOr<CallKind> kind = ParseKind(options.kind);
    if (!kind.ok()) return kind.status();
    if (!have_payload && *kind != scenario_kind) {
      return Invalid(
          absl::StrCat("--kind=", options.kind, " does not match --scenario=",
                       options.scenario.empty() ? "unary" : options.scenario,
                       " (", CallKindName(scenario_kind), ")"));
    }
    out.kind = *kind;
  }
  return out;
}

}  // namespace sluice::bench
