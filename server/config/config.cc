// Config validation: one pass over a copy of the proto that records every
// problem (not just the first), fills each unset field with its documented
// default, and builds the typed settings the daemon reads.
#include "server/config/config.h"

#include <arpa/inet.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/read_file.h"
#include "server/config/referenced_files.h"
#include "server/config/yaml_to_json.h"

namespace sluice {
namespace {

namespace pb = ::sluice::config::v1;

constexpr char kDefaultDataAddress[] = "0.0.0.0:8080";
constexpr char kDefaultAdminAddress[] = "127.0.0.1:9901";
constexpr char kDefaultMetricsAddress[] = "0.0.0.0:9090";
constexpr char kDefaultDrainTimeout[] = "30s";
// Above the 5 min a default gRPC server (C++, Go, Java) tolerates between
// pings without data, with a margin: it never earns a too_many_pings GOAWAY.
constexpr char kDefaultKeepaliveTime[] = "5m30s";
constexpr char kDefaultKeepaliveTimeout[] = "20s";
constexpr char kDefaultMinBudget[] = "1ms";
constexpr char kNoDuration[] = "0s";
constexpr char kRoundRobin[] = "round_robin";
constexpr char kPickFirst[] = "pick_first";
constexpr uint32_t kMaxWorkers = 256;
constexpr uint32_t kDefaultChannels = 2;
constexpr uint32_t kMaxChannels = 64;
constexpr uint32_t kDefaultStreamWindow = 2;
constexpr uint32_t kMaxStreamWindow = 64;
constexpr uint32_t kDefaultMessageBytes = 4 << 20;
constexpr uint32_t kMaxMessageBytes = 1 << 30;
constexpr uint32_t kDefaultMaxConcurrentStreams = 1000;
constexpr uint32_t kMaxConcurrentStreams = std::numeric_limits<int>::max();
constexpr size_t kMaxFileBytes = 16 << 20;
// One token per nanosecond: a faster rate would round to this one.
constexpr uint32_t kMaxTokensPerSecond = 1'000'000'000;

std::string Quote(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

std::string OutOfRange(uint64_t value, uint64_t low, uint64_t high) {
  return absl::StrCat(value, " is out of range (", low, "..", high, ")");
}

// True if `path` is `outer` or inside it: "routes[0].match.method" is in
// "routes[0]", "upstreams[1]" in "upstreams".
bool Within(absl::string_view path, absl::string_view outer) {
  return absl::StartsWith(path, outer) &&
         (path.size() == outer.size() || path[outer.size()] == '.' ||
          path[outer.size()] == '[');
}

// Collects "<source>: <path>: <reason>" lines: first the schema errors the
// YAML reading found, then the semantic ones. A semantic error at or
// inside a path the schema reading dropped (see SchemaErrors::dropped) is
// about a value nobody wrote, and is left out; a check that reads other
// fields too asks Dropped() first.
class Errors {
 public:
  Errors(absl::string_view source, const SchemaErrors& schema)
      : source_(source), dropped_(schema.dropped) {
    for (const std::string& line : schema.lines) {
      lines_.push_back(absl::StrCat(source_, ": ", line));
    }
  }

  void Add(absl::string_view path, absl::string_view reason) {
    for (const std::string& d : dropped_) {
      if (Within(path, d)) return;
    }
    lines_.push_back(absl::StrCat(source_, ": ", path, ": ", reason));
  }
  // Whether the schema reading dropped `path`, a part of it, or a field
  // containing it.
  bool Dropped(absl::string_view path) const {
    return std::any_of(dropped_.begin(), dropped_.end(),
                       [path](const std::string& d) {
                         return Within(path, d) || Within(d, path);
                       });
  }
  bool empty() const { return lines_.empty(); }
  size_t size() const { return lines_.size(); }
  absl::Status ToStatus() const {
    return absl::InvalidArgumentError(absl::StrJoin(lines_, "\n"));
  }

 private:
  std::string source_;
  std::vector<std::string> dropped_;
  std::vector<std::string> lines_;
};

// Parses a duration field. Empty text takes `default_text`. The canonical
// text of the value is written back, so the proto (and the hash) shows the
// value, not its spelling: "1000ms" becomes "1s", "0" becomes "0s". Errors
// leave the result at zero and the text as written.
absl::Duration Duration(std::string* text, const char* default_text,
                        absl::string_view path, Errors* errors) {
  if (text->empty()) *text = default_text;
  absl::Duration value;
  if (!absl::ParseDuration(*text, &value)) {
    errors->Add(path, absl::StrCat("invalid duration ", Quote(*text),
                                   " (use e.g. \"250ms\", \"1.5s\", \"2m\")"));
    return absl::ZeroDuration();
  }
  if (value < absl::ZeroDuration()) {
    errors->Add(path, absl::StrCat("negative duration ", Quote(*text),
                                   " (must be >= 0)"));
    return absl::ZeroDuration();
  }
  if (value == absl::InfiniteDuration()) {
    errors->Add(path, absl::StrCat("infinite duration ", Quote(*text),
                                   " (use a finite one, e.g. \"1h\")"));
    return absl::ZeroDuration();
  }
  *text = CanonicalDuration(value);
  return value;
}

bool ValidName(absl::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}

bool ValidHostName(absl::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(host, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' ||
        label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(c) && c != '-') return false;
    }
  }
  return true;
}

// A parsed listen address.
struct HostPort {
  std::string host;  // without brackets
  int port = 0;
};

// Parses "host:port" (IPv4, [IPv6] or a DNS name; port 0..65535). On error
// returns false with `reason` set.
bool ParseAddress(absl::string_view address, HostPort* out,
                  std::string* reason) {
  const std::string shown = Quote(address);
  absl::string_view host;
  absl::string_view port;
  if (absl::StartsWith(address, "[")) {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos ||
        address.substr(close + 1, 1) != ":") {
      *reason = absl::StrCat("invalid address ", shown,
                             " (expected [IPv6]:port, e.g. \"[::1]:8080\")");
      return false;
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
    in6_addr ip6;
    if (!inet_pton(AF_INET6, std::string(host).c_str(), &ip6)) {
      *reason = absl::StrCat("invalid address ", shown, ": ", Quote(host),
                             " is not an IPv6 address");
      return false;
    }
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) {
      *reason = absl::StrCat("invalid address ", shown,
                             " (expected host:port, e.g. \"0.0.0.0:8080\")");
      return false;
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.empty()) {
      *reason = absl::StrCat(
          "invalid address ", shown, ": the host is missing (use ",
          Quote(absl::StrCat("0.0.0.0", address)), " for every interface)");
      return false;
    }
    if (absl::StrContains(host, ':')) {
      *reason = absl::StrCat("invalid address ", shown,
                             ": put an IPv6 host in brackets, e.g. ",
                             Quote(absl::StrCat("[::1]:", port)));
      return false;
    }
    const bool numeric = std::all_of(host.begin(), host.end(), [](char c) {
      return absl::ascii_isdigit(c) || c == '.';
    });
    in_addr ip4;
    if (numeric ? !inet_pton(AF_INET, std::string(host).c_str(), &ip4)
                : !ValidHostName(host)) {
      *reason = absl::StrCat(
          "invalid address ", shown, ": ", Quote(host),
          numeric ? " is not an IPv4 address" : " is not a valid host name");
      return false;
    }
  }
  int value = -1;
  const bool digits = !port.empty() && port.size() <= 5 &&
                      std::all_of(port.begin(), port.end(), [](char c) {
                        return absl::ascii_isdigit(c);
                      });
  if (!digits || !absl::SimpleAtoi(port, &value) || value > 65535) {
    *reason = absl::StrCat("invalid address ", shown, ": port ", Quote(port),
                           " is not a number in 0..65535");
    return false;
  }
  out->host = std::string(host);
  out->port = value;
  return true;
}

// A full gRPC method name: "/package.Service/Method" (the package is
// optional, as in gRPC itself).
bool ValidMethod(absl::string_view method) {
  const std::vector<absl::string_view> parts = absl::StrSplit(method, '/');
  if (parts.size() != 3 || !parts[0].empty()) return false;
  const auto identifier = [](absl::string_view s, bool dots) {
    if (s.empty() || absl::ascii_isdigit(s.front()) || s.front() == '.' ||
        s.back() == '.') {
      return false;
    }
    return std::all_of(s.begin(), s.end(), [dots](char c) {
      return absl::ascii_isalnum(c) || c == '_' || (dots && c == '.');
    });
  };
  return identifier(parts[1], true) && identifier(parts[2], false);
}

std::string Sha256Prefix(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(),
                 nullptr) != 1 ||
      size < 8) {
    return "0000000000000000";  // libcrypto without SHA-256: not expected.
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), 8));
}

// Whether a gRPC target names this host only: a unix socket, or loopback
// addresses ("localhost", 127.0.0.0/8, ::1), with or without a scheme
// ("ipv4:", "ipv6:", "dns:///"). Such an upstream is the sidecar's own app:
// reconnecting to it often costs nothing.
bool LocalTarget(absl::string_view target) {
  if (absl::StartsWith(target, "unix:") ||
      absl::StartsWith(target, "unix-abstract:")) {
    return true;
  }
  std::vector<absl::string_view> hosts;
  if (absl::ConsumePrefix(&target, "ipv4:") ||
      absl::ConsumePrefix(&target, "ipv6:")) {
    hosts = absl::StrSplit(target, ',');
  } else {
    if (absl::ConsumePrefix(&target, "dns:")) {
      const size_t slash = target.rfind('/');
      if (slash != absl::string_view::npos) target.remove_prefix(slash + 1);
    }
    hosts.push_back(target);
  }
  if (hosts.empty()) return false;
  for (absl::string_view host : hosts) {
    if (absl::StartsWith(host, "[")) {  // [v6]:port
      const size_t end = host.find(']');
      if (end == absl::string_view::npos) return false;
      host = host.substr(1, end - 1);
    } else if (std::count(host.begin(), host.end(), ':') == 1) {
      host = host.substr(0, host.find(':'));  // host:port
    }
    if (host != "localhost" && host != "::1" &&
        !absl::StartsWith(host, "127.")) {
      return false;
    }
  }
  return true;
}

bool Wildcard(const std::string& host) {
  return host == "0.0.0.0" || host == "::";
}

void CheckUpstream(pb::Upstream* upstream, const std::string& path,
                   Errors* errors, UpstreamSettings* out) {
  if (upstream->name().empty()) {
    errors->Add(path + ".name", "required");
  } else if (!ValidName(upstream->name())) {
    errors->Add(path + ".name",
                absl::StrCat("invalid name ", Quote(upstream->name()),
                             " (use letters, digits, '_', '.', '-')"));
  } else if (upstream->name() == "liveness") {
    // Each upstream is a health service of its name; "liveness" is
    // Sluice's own (the process runs).
    errors->Add(path + ".name",
                "\"liveness\" is reserved: the health service of that name "
                "reports that Sluice itself runs");
  }
  out->name = upstream->name();

  const std::string& target = upstream->target();
  if (target.empty()) {
    errors->Add(path + ".target",
                "required (e.g. \"127.0.0.1:50051\" or "
                "\"dns:///backend:50051\")");
  } else if (std::any_of(target.begin(), target.end(), [](char c) {
               return absl::ascii_isspace(c) || absl::ascii_iscntrl(c);
             })) {
    errors->Add(path + ".target", absl::StrCat("invalid target ", Quote(target),
                                               " (no spaces allowed)"));
  }
  out->target = target;

  if (upstream->channels() == 0) upstream->set_channels(kDefaultChannels);
  if (upstream->channels() > kMaxChannels) {
    errors->Add(path + ".channels",
                OutOfRange(upstream->channels(), 1, kMaxChannels));
  }
  out->channels = static_cast<int>(upstream->channels());

  if (upstream->lb_policy().empty()) upstream->set_lb_policy(kRoundRobin);
  if (upstream->lb_policy() != kRoundRobin &&
      upstream->lb_policy() != kPickFirst) {
    errors->Add(path + ".lb_policy",
                absl::StrCat("unknown policy ", Quote(upstream->lb_policy()),
                             " (use \"round_robin\" or \"pick_first\")"));
  }
  out->lb_policy = upstream->lb_policy();

  pb::Keepalive* keepalive = upstream->mutable_keepalive();
  out->keepalive_time =
      Duration(keepalive->mutable_time(), kDefaultKeepaliveTime,
               path + ".keepalive.time", errors);
  const size_t errors_before = errors->size();
  out->keepalive_timeout =
      Duration(keepalive->mutable_timeout(), kDefaultKeepaliveTimeout,
               path + ".keepalive.timeout", errors);
  if (errors->size() == errors_before &&
      out->keepalive_timeout == absl::ZeroDuration()) {
    errors->Add(path + ".keepalive.timeout",
                "must be greater than 0 (default \"20s\")");
  }
  // gRPC takes both as int milliseconds.
  if (out->keepalive_time > absl::Hours(24)) {
    errors->Add(path + ".keepalive.time",
                "must be at most \"24h\" (\"0s\" turns keepalive off)");
  }
  if (out->keepalive_timeout > absl::Hours(1)) {
    errors->Add(path + ".keepalive.timeout", "must be at most \"1h\"");
  }
  out->keepalive_permit_without_calls = keepalive->permit_without_calls();

  if (upstream->max_message_bytes() == 0) {
    upstream->set_max_message_bytes(kDefaultMessageBytes);
  }
  if (upstream->max_message_bytes() > kMaxMessageBytes) {
    errors->Add(path + ".max_message_bytes",
                OutOfRange(upstream->max_message_bytes(), 1, kMaxMessageBytes));
  }
  out->max_message_bytes = static_cast<int>(
      std::min(upstream->max_message_bytes(), kMaxMessageBytes));

  if (upstream->has_tls()) {
    const pb::UpstreamTls& tls = upstream->tls();
    if (!tls.cert_file().empty() && tls.key_file().empty()) {
      errors->Add(path + ".tls.key_file", "required when cert_file is set");
    }
    if (tls.cert_file().empty() && !tls.key_file().empty()) {
      errors->Add(path + ".tls.cert_file", "required when key_file is set");
    }
    out->tls = tls.enabled();
    out->tls_ca_file = tls.ca_file();
    out->tls_cert_file = tls.cert_file();
    out->tls_key_file = tls.key_file();
    out->tls_server_name = tls.server_name();
  }
  out->required = upstream->required();
  out->reflection = !upstream->has_reflection() || upstream->reflection();
  if (upstream->has_health_check()) {
    pb::UpstreamHealthCheck* hc = upstream->mutable_health_check();
    out->health_check = true;
    out->health_service = hc->service();
    const size_t errors_before = errors->size();
    out->health_interval = Duration(hc->mutable_interval(), "5s",
                                    path + ".health_check.interval", errors);
    out->health_timeout = Duration(hc->mutable_timeout(), "1s",
                                   path + ".health_check.timeout", errors);
    // Both values are compared: not when one did not fit the schema.
    if (errors->size() == errors_before &&
        !errors->Dropped(path + ".health_check")) {
      if (out->health_interval < absl::Milliseconds(100)) {
        errors->Add(path + ".health_check.interval",
                    "must be at least \"100ms\"");
      } else if (out->health_timeout <= absl::ZeroDuration() ||
                 out->health_timeout > out->health_interval) {
        errors->Add(path + ".health_check.timeout",
                    absl::StrCat("must be greater than 0 and at most "
                                 "health_check.interval (",
                                 hc->interval(), ")"));
      }
    }
  }

  // Reconnect: sidecar defaults for the app next door, capped growth for
  // anything remote (config.proto, Reconnect).
  const bool local = LocalTarget(target);
  pb::Reconnect* reconnect = upstream->mutable_reconnect();
  const size_t reconnect_errors = errors->size();
  out->reconnect_initial_backoff =
      Duration(reconnect->mutable_initial_backoff(), local ? "100ms" : "1s",
               path + ".reconnect.initial_backoff", errors);
  out->reconnect_max_backoff =
      Duration(reconnect->mutable_max_backoff(), local ? "1s" : "10s",
               path + ".reconnect.max_backoff", errors);
  out->connect_timeout =
      Duration(reconnect->mutable_connect_timeout(), local ? "1s" : "20s",
               path + ".reconnect.connect_timeout", errors);
  if (errors->size() == reconnect_errors &&
      !errors->Dropped(path + ".reconnect")) {
    const std::pair<absl::Duration, const char*> bounded[] = {
        {out->reconnect_initial_backoff, "initial_backoff"},
        {out->reconnect_max_backoff, "max_backoff"},
        {out->connect_timeout, "connect_timeout"}};
    for (const auto& [value, field] : bounded) {
      if (value < absl::Milliseconds(100) || value > absl::Hours(1)) {
        errors->Add(absl::StrCat(path, ".reconnect.", field),
                    "must be between \"100ms\" and \"1h\"");
      }
    }
    if (out->reconnect_max_backoff < out->reconnect_initial_backoff) {
      errors->Add(path + ".reconnect.max_backoff",
                  absl::StrCat("must be at least initial_backoff (",
                               reconnect->initial_backoff(), ")"));
    }
  }
  const size_t wait_errors = errors->size();
  out->connect_wait = Duration(upstream->mutable_connect_wait(), "1s",
                               path + ".connect_wait", errors);
  if (errors->size() == wait_errors && out->connect_wait > absl::Hours(1)) {
    errors->Add(path + ".connect_wait", "must be at most \"1h\"");
  }
}

void CheckDeadline(pb::DeadlinePolicy* deadline, const std::string& path,
                   Errors* errors, DeadlineSettings* out) {
  out->default_timeout =
      Duration(deadline->mutable_default_timeout(), kNoDuration,
               path + ".default_timeout", errors);
  out->max_timeout = Duration(deadline->mutable_max_timeout(), kNoDuration,
                              path + ".max_timeout", errors);
  out->offset = Duration(deadline->mutable_offset(), kNoDuration,
                         path + ".offset", errors);
  out->min_budget = Duration(deadline->mutable_min_budget(), kDefaultMinBudget,
                             path + ".min_budget", errors);
  out->stream_idle_timeout =
      Duration(deadline->mutable_stream_idle_timeout(), kNoDuration,
               path + ".stream_idle_timeout", errors);
  if (out->max_timeout > absl::ZeroDuration() &&
      out->max_timeout < out->default_timeout &&
      !errors->Dropped(path + ".default_timeout")) {
    errors->Add(path + ".max_timeout",
                absl::StrCat(absl::FormatDuration(out->max_timeout),
                             " is less than default_timeout ",
                             absl::FormatDuration(out->default_timeout)));
  }
}

void CheckMatch(const pb::Route& route, const std::string& path, Errors* errors,
                RouteSettings* out) {
  const pb::RouteMatch& match = route.match();
  switch (match.kind_case()) {
    case pb::RouteMatch::kMethod:
      out->exact = true;
      out->match = match.method();
      if (!ValidMethod(match.method())) {
        errors->Add(path + ".match.method",
                    absl::StrCat("invalid method ", Quote(match.method()),
                                 " (expected \"/package.Service/Method\")"));
      }
      break;
    case pb::RouteMatch::kPrefix:
      out->exact = false;
      out->match = match.prefix();
      if (!absl::StartsWith(match.prefix(), "/")) {
        errors->Add(path + ".match.prefix",
                    absl::StrCat("invalid prefix ", Quote(match.prefix()),
                                 " (must start with \"/\", e.g. "
                                 "\"/package.Service/\", or be \"/\" for "
                                 "every call)"));
      }
      break;
    case pb::RouteMatch::KIND_NOT_SET:
      if (errors->Dropped(path + ".match")) break;  // written, did not fit
      errors->Add(path + ".match",
                  "required: set \"method\" (e.g. \"/package.Service/Method\") "
                  "or \"prefix\" (e.g. \"/package.Service/\")");
      break;
  }
}

constexpr char kDefaultMaxWait[] = "1s";
constexpr char kPace[] = "pace";
constexpr char kReject[] = "reject";
constexpr char kDefaultKey[] = "default";
constexpr char kHeaderKeyPrefix[] = "header:";
constexpr uint32_t kDefaultMaxKeys = 10000;
constexpr uint32_t kMaxMaxKeys = 10000000;

// One `key` entry of a limit. A header name is lowered (gRPC metadata keys
// are lowercase) and written back. Returns false with `reason` set.
bool CheckKeyPart(std::string* part, std::string* reason) {
  if (*part == "peer" || *part == "method") return true;
  if (!absl::StartsWith(*part, kHeaderKeyPrefix)) {
    *reason = absl::StrCat("unknown key part ", Quote(*part),
                           " (use \"peer\", \"method\" or "
                           "\"header:<name>\")");
    return false;
  }
  const std::string shown = Quote(*part);
  const std::string header =
      absl::AsciiStrToLower(part->substr(sizeof(kHeaderKeyPrefix) - 1));
  if (header.empty()) {
    *reason =
        absl::StrCat(shown, " needs a header name, e.g. \"header:x-api-key\"");
    return false;
  }
  if (header.front() == ':') {
    *reason = absl::StrCat(shown,
                           " names a pseudo-header; use a regular header "
                           "name (the method is the \"method\" key part)");
    return false;
  }
  if (!std::all_of(header.begin(), header.end(), [](char c) {
        return absl::ascii_isdigit(c) || absl::ascii_islower(c) || c == '-' ||
               c == '_' || c == '.';
      })) {
    *reason = absl::StrCat("invalid header name in ", shown,
                           " (use letters, digits, '-', '_', '.')");
    return false;
  }
  *part = absl::StrCat(kHeaderKeyPrefix, header);
  return true;
}

// A `key` list (the limit's or concurrency's) at `path`: each part
// checked and lowered, no duplicates.
void CheckKeyParts(google::protobuf::RepeatedPtrField<std::string>* key,
                   const std::string& path, Errors* errors,
                   std::vector<std::string>* out) {
  absl::flat_hash_map<std::string, int> parts;
  for (int k = 0; k < key->size(); ++k) {
    const std::string key_path = absl::StrCat(path, "[", k, "]");
    std::string* part = key->Mutable(k);
    std::string reason;
    if (!CheckKeyPart(part, &reason)) {
      errors->Add(key_path, reason);
      continue;
    }
    const auto [it, inserted] = parts.try_emplace(*part, k);
    if (!inserted) {
      errors->Add(key_path, absl::StrCat("duplicate key part ", Quote(*part),
                                         " (first at key[", it->second, "])"));
    }
    out->push_back(*part);
  }
}

constexpr uint32_t kDefaultAdaptiveMin = 1;
constexpr uint32_t kDefaultAdaptiveInitial = 20;
constexpr char kDefaultAdaptiveWindow[] = "100ms";
constexpr uint32_t kDefaultAdaptiveWindowSamples = 10;
constexpr double kDefaultAdaptiveSmoothing = 0.2;
constexpr double kDefaultAdaptiveRttTolerance = 1.2;
constexpr uint32_t kDefaultAdaptiveLongWindow = 600;
constexpr char kDefaultAdaptiveProbeInterval[] = "30s";
constexpr uint32_t kDefaultAdaptiveProbeSamples = 10;
constexpr char kDefaultAdaptiveProbeTimeout[] = "2s";
constexpr double kDefaultAdaptiveProbeJitter = 0.1;
constexpr uint32_t kMaxAdaptiveLimit = 1000000;

// concurrency.adaptive at `path`; fills in the defaults.
void CheckAdaptive(pb::AdaptiveConcurrency* adaptive, const std::string& path,
                   Errors* errors, AdaptiveConcurrencySettings* out) {
  if (adaptive->min() == 0) adaptive->set_min(kDefaultAdaptiveMin);
  if (adaptive->max() == 0) {
    errors->Add(path + ".max", "required, > 0");
  } else if (adaptive->max() > kMaxAdaptiveLimit) {
    errors->Add(path + ".max",
                OutOfRange(adaptive->max(), 1, kMaxAdaptiveLimit));
  } else if (adaptive->min() > adaptive->max()) {
    errors->Add(
        path + ".min",
        absl::StrCat(adaptive->min(), " is larger than max ", adaptive->max()));
  }
  if (adaptive->initial() == 0) {
    adaptive->set_initial(
        std::clamp(kDefaultAdaptiveInitial, adaptive->min(),
                   std::max(adaptive->min(), adaptive->max())));
  } else if (adaptive->initial() < adaptive->min() ||
             (adaptive->max() > 0 && adaptive->initial() > adaptive->max())) {
    errors->Add(path + ".initial",
                absl::StrCat(adaptive->initial(), " is outside min..max (",
                             adaptive->min(), "..", adaptive->max(), ")"));
  }
  out->min = adaptive->min();
  out->max = adaptive->max();
  out->initial = adaptive->initial();
  out->window = Duration(adaptive->mutable_window(), kDefaultAdaptiveWindow,
                         path + ".window", errors);
  if (out->window == absl::ZeroDuration() &&
      !errors->Dropped(path + ".window")) {
    errors->Add(path + ".window", "must be > 0");
  }
  if (adaptive->window_samples() == 0) {
    adaptive->set_window_samples(kDefaultAdaptiveWindowSamples);
  }
  out->window_samples = adaptive->window_samples();
  if (adaptive->smoothing() == 0) {
    adaptive->set_smoothing(kDefaultAdaptiveSmoothing);
  }
  if (!(adaptive->smoothing() > 0 && adaptive->smoothing() <= 1)) {
    errors->Add(path + ".smoothing",
                absl::StrCat(adaptive->smoothing(), " is outside (0, 1]"));
  }
  out->smoothing = adaptive->smoothing();
  if (adaptive->rtt_tolerance() == 0) {
    adaptive->set_rtt_tolerance(kDefaultAdaptiveRttTolerance);
  }
  if (!(adaptive->rtt_tolerance() >= 1 && adaptive->rtt_tolerance() <= 100)) {
    errors->Add(path + ".rtt_tolerance", absl::StrCat(adaptive->rtt_tolerance(),
                                                      " is outside [1, 100]"));
  }
  out->rtt_tolerance = adaptive->rtt_tolerance();
  if (adaptive->long_window() == 0) {
    adaptive->set_long_window(kDefaultAdaptiveLongWindow);
  }
  out->long_window = adaptive->long_window();
  out->probe_interval =
      Duration(adaptive->mutable_probe_interval(),
               kDefaultAdaptiveProbeInterval, path + ".probe_interval", errors);
  if (adaptive->probe_samples() == 0) {
    adaptive->set_probe_samples(kDefaultAdaptiveProbeSamples);
  }
  out->probe_samples = adaptive->probe_samples();
  out->probe_timeout =
      Duration(adaptive->mutable_probe_timeout(), kDefaultAdaptiveProbeTimeout,
               path + ".probe_timeout", errors);
  if (out->probe_timeout == absl::ZeroDuration() &&
      !errors->Dropped(path + ".probe_timeout")) {
    errors->Add(path + ".probe_timeout", "must be > 0");
  }
  if (!adaptive->has_probe_jitter()) {
    adaptive->set_probe_jitter(kDefaultAdaptiveProbeJitter);
  }
  if (!(adaptive->probe_jitter() >= 0 && adaptive->probe_jitter() <= 0.5)) {
    errors->Add(path + ".probe_jitter",
                absl::StrCat(adaptive->probe_jitter(), " is outside [0, 0.5]"));
  }
  out->probe_jitter = adaptive->probe_jitter();
}

// A limit's `concurrency` at `path` (".concurrency"): the shared bounds,
// fair queuing across keys, and the adaptive limit.
void CheckConcurrency(pb::ConcurrencyLimit* concurrency,
                      const std::string& path, Errors* errors,
                      LimitSettings* out) {
  if (concurrency->has_adaptive()) {
    if (concurrency->max() != 0) {
      errors->Add(path + ".max",
                  "not with adaptive (the limit moves between adaptive.min "
                  "and adaptive.max)");
    }
    out->concurrency_adaptive = true;
    CheckAdaptive(concurrency->mutable_adaptive(), path + ".adaptive", errors,
                  &out->adaptive);
    // The limiter starts at the initial value; the adaptive limit moves it.
    out->concurrency_max = std::max<int64_t>(1, out->adaptive.initial);
  } else {
    if (concurrency->max() == 0) errors->Add(path + ".max", "required, > 0");
    out->concurrency_max = concurrency->max();
  }
  out->concurrency_queue = concurrency->queue();
  out->concurrency_max_wait =
      Duration(concurrency->mutable_max_wait(), kDefaultMaxWait,
               path + ".max_wait", errors);
  CheckKeyParts(concurrency->mutable_key(), path + ".key", errors,
                &out->concurrency_key);
  const bool keyed = concurrency->key_size() > 0;
  if (concurrency->max_per_key() > 0) {
    if (!keyed) {
      errors->Add(path + ".max_per_key", "set only with concurrency.key");
    } else if (!concurrency->has_adaptive() &&
               concurrency->max_per_key() > concurrency->max()) {
      errors->Add(path + ".max_per_key",
                  absl::StrCat(concurrency->max_per_key(),
                               " is larger than max ", concurrency->max()));
    } else if (concurrency->has_adaptive() &&
               concurrency->max_per_key() > concurrency->adaptive().max()) {
      errors->Add(path + ".max_per_key",
                  absl::StrCat(concurrency->max_per_key(),
                               " is larger than adaptive.max ",
                               concurrency->adaptive().max()));
    }
  }
  out->concurrency_max_per_key = concurrency->max_per_key();
  if (concurrency->max_queue_per_key() > 0) {
    if (!keyed) {
      errors->Add(path + ".max_queue_per_key", "set only with concurrency.key");
    } else if (concurrency->max_queue_per_key() > concurrency->queue()) {
      errors->Add(path + ".max_queue_per_key",
                  absl::StrCat(concurrency->max_queue_per_key(),
                               " is larger than queue ", concurrency->queue()));
    }
  }
  out->concurrency_max_queue_per_key = concurrency->max_queue_per_key();
}

// Canonical text of a limit whose defaults are filled in: its JSON, with
// the fields in field-number order.
std::string LimitFingerprint(const pb::Limit& limit) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(limit, &json, options)
           .ok()) {
    // Not expected for this schema; the binary form is canonical too.
    json.clear();
    google::protobuf::io::StringOutputStream stream(&json);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    limit.SerializeToCodedStream(&coded);
  }
  return json;
}

constexpr char kScopeLocal[] = "local";
constexpr char kScopeGlobal[] = "global";
constexpr uint32_t kMaxExpectedReplicas = 10000;

// scope and global: a global limit is a `rate` shared through Redis.
// Concurrency and messages stay per replica (a permit or a stream's pacing
// would need a round trip per release or per message).
void CheckScope(pb::Limit* limit, const std::string& path, Errors* errors,
                LimitSettings* out) {
  const std::string& scope = limit->scope();
  if (!scope.empty() && scope != kScopeLocal && scope != kScopeGlobal) {
    errors->Add(path + ".scope",
                absl::StrCat("unknown scope ", Quote(scope),
                             " (use \"local\" or \"global\")"));
    return;
  }
  if (scope != kScopeGlobal) {
    if (limit->has_global() && !errors->Dropped(path + ".scope")) {
      errors->Add(path + ".global", "set only with scope: global");
    }
    return;
  }
  out->global = true;
  if (!limit->has_rate() && !errors->Dropped(path + ".rate")) {
    errors->Add(path + ".scope", "scope: global needs a rate");
  }
  if (limit->has_concurrency() || limit->has_messages()) {
    errors->Add(path + ".scope",
                "scope: global applies to rate only (concurrency and messages "
                "stay per replica: put them in a limit of their own)");
  }
  pb::GlobalLimit* global = limit->mutable_global();
  if (global->fallback().empty()) global->set_fallback("local");
  if (global->fallback() != "local" && global->fallback() != "fail_open" &&
      global->fallback() != "fail_closed") {
    errors->Add(path + ".global.fallback",
                absl::StrCat("unknown fallback ", Quote(global->fallback()),
                             " (use \"fail_open\", \"fail_closed\" or "
                             "\"local\")"));
  }
  out->global_fallback = global->fallback();
  if (global->expected_replicas() == 0) global->set_expected_replicas(1);
  if (global->expected_replicas() > kMaxExpectedReplicas) {
    errors->Add(
        path + ".global.expected_replicas",
        OutOfRange(global->expected_replicas(), 1, kMaxExpectedReplicas));
  }
  out->expected_replicas = global->expected_replicas();
  if (global->lease() == 0) global->set_lease(1);
  if (out->rate_burst > 0 && global->lease() > out->rate_burst &&
      !errors->Dropped(path + ".rate")) {
    errors->Add(path + ".global.lease",
                absl::StrCat(global->lease(), " is larger than the burst ",
                             out->rate_burst));
  }
  out->lease = global->lease();
}

void CheckLimit(pb::Limit* limit, const std::string& path, Errors* errors,
                LimitSettings* out) {
  out->name = limit->name();
  if (limit->name().empty()) {
    errors->Add(path + ".name", "required");
  } else if (!ValidName(limit->name())) {
    errors->Add(path + ".name",
                absl::StrCat("invalid name ", Quote(limit->name()),
                             " (use letters, digits, '_', '.', '-')"));
  }
  if (!limit->has_rate() && !limit->has_concurrency() &&
      !limit->has_messages() && !errors->Dropped(path + ".rate") &&
      !errors->Dropped(path + ".concurrency") &&
      !errors->Dropped(path + ".messages")) {
    errors->Add(path,
                "a limit needs at least one of rate, concurrency, messages");
  }

  if (limit->has_rate()) {
    pb::RateLimit* rate = limit->mutable_rate();
    if (rate->per_second() > 0 && rate->per_minute() > 0) {
      errors->Add(path + ".rate", "set only one of per_second and per_minute");
    } else if (rate->per_second() == 0 && rate->per_minute() == 0) {
      if (!errors->Dropped(path + ".rate")) {
        errors->Add(path + ".rate", "set per_second or per_minute (> 0)");
      }
    } else {
      if (rate->per_second() > kMaxTokensPerSecond) {
        errors->Add(path + ".rate.per_second",
                    OutOfRange(rate->per_second(), 1, kMaxTokensPerSecond) +
                        "; the buckets count time in nanoseconds");
      }
      if (rate->per_second() > 0) {
        out->rate_count = rate->per_second();
        out->rate_period = absl::Seconds(1);
      } else {
        out->rate_count = rate->per_minute();
        out->rate_period = absl::Minutes(1);
      }
      if (rate->burst() == 0) {
        rate->set_burst(rate->per_second() > 0
                            ? rate->per_second()
                            : std::max(1u, rate->per_minute() / 60));
      }
      out->rate_burst = rate->burst();
    }
  }

  if (limit->has_concurrency()) {
    CheckConcurrency(limit->mutable_concurrency(), path + ".concurrency",
                     errors, out);
  }

  if (limit->has_messages()) {
    pb::MessageLimit* messages = limit->mutable_messages();
    if (messages->per_second() == 0) {
      errors->Add(path + ".messages.per_second", "required, > 0");
    } else if (messages->per_second() > kMaxTokensPerSecond) {
      errors->Add(path + ".messages.per_second",
                  OutOfRange(messages->per_second(), 1, kMaxTokensPerSecond) +
                      "; the buckets count time in nanoseconds");
    }
    if (messages->burst() == 0) messages->set_burst(messages->per_second());
    if (messages->mode().empty()) messages->set_mode(kPace);
    if (messages->mode() != kPace && messages->mode() != kReject) {
      errors->Add(path + ".messages.mode",
                  absl::StrCat("unknown mode ", Quote(messages->mode()),
                               " (use \"pace\" or \"reject\")"));
    }
    out->messages_per_second = messages->per_second();
    out->messages_burst = messages->burst();
    out->messages_reject = messages->mode() == kReject;
    out->messages_client_to_upstream = messages->client_to_upstream();
  }

  if (limit->key_size() > 0 && !limit->has_rate() &&
      !errors->Dropped(path + ".rate")) {
    errors->Add(path + ".key", "key applies to rate only");
  }
  CheckKeyParts(limit->mutable_key(), path + ".key", errors, &out->key);

  if (limit->max_keys() == 0) limit->set_max_keys(kDefaultMaxKeys);
  if (limit->max_keys() > kMaxMaxKeys) {
    errors->Add(path + ".max_keys",
                OutOfRange(limit->max_keys(), 1, kMaxMaxKeys));
  }
  out->max_keys = limit->max_keys();
  if (limit->default_key().empty()) limit->set_default_key(kDefaultKey);
  out->default_key = limit->default_key();
  out->dry_run = limit->dry_run();
  CheckScope(limit, path, errors, out);
  out->fingerprint = LimitFingerprint(*limit);
}

void CheckLimits(pb::Route* route, const std::string& path, Errors* errors,
                 RouteSettings* out) {
  absl::flat_hash_map<std::string, int> names;
  for (int j = 0; j < route->limits_size(); ++j) {
    const std::string limit_path = absl::StrCat(path, ".limits[", j, "]");
    const std::string& name = route->limits(j).name();
    if (ValidName(name)) {
      const auto [it, inserted] = names.try_emplace(name, j);
      if (!inserted) {
        errors->Add(limit_path + ".name",
                    absl::StrCat("duplicate name ", Quote(name), " (first at ",
                                 path, ".limits[", it->second, "])"));
      }
    }
    LimitSettings settings;
    CheckLimit(route->mutable_limits(j), limit_path, errors, &settings);
    out->limits.push_back(std::move(settings));
  }
  out->rate_limit_headers = route->rate_limit_headers();
}

constexpr char kDefaultRedisTimeout[] = "50ms";
constexpr char kDefaultRedisConnectTimeout[] = "1s";
constexpr char kDefaultRedisKeyPrefix[] = "sluice:";
constexpr uint32_t kDefaultRedisPool = 2;
constexpr uint32_t kMaxRedisPool = 64;
constexpr int kMaxRedisClusterSeeds = 64;

// The `redis` section; REQUIRED when any limit has scope: global.
void CheckRedis(pb::Config* p, const std::vector<RouteSettings>& routes,
                Errors* errors, RedisSettings* out) {
  if (!p->has_redis()) {
    if (errors->Dropped("redis")) return;  // written, but not a map
    for (size_t i = 0; i < routes.size(); ++i) {
      for (size_t j = 0; j < routes[i].limits.size(); ++j) {
        if (routes[i].limits[j].global) {
          errors->Add(absl::StrCat("routes[", i, "].limits[", j, "].scope"),
                      "scope: global needs the top-level redis section "
                      "(redis.address)");
        }
      }
    }
    return;
  }
  pb::Redis* redis = p->mutable_redis();
  out->enabled = true;
  // One host:port of redis.address or redis.cluster[i].
  auto check_address = [errors](const std::string& field,
                                const std::string& address,
                                RedisSettings::Node* node) {
    if (absl::StrContains(address, "://") || absl::StrContains(address, '@')) {
      // Not echoed: it may hold a password.
      errors->Add(field,
                  "must be host:port, not a URL, and must not hold "
                  "credentials: put the password in a file named by "
                  "redis.password_file (and an ACL user in "
                  "redis.username_file)");
      return;
    }
    HostPort parsed;
    std::string reason;
    if (!ParseAddress(address, &parsed, &reason)) {
      errors->Add(field, reason);
    } else if (parsed.port == 0) {
      errors->Add(field, "port 0 is not a Redis port");
    } else {
      node->host = parsed.host;
      node->port = parsed.port;
    }
  };
  if (redis->cluster_size() > 0) {
    if (!redis->address().empty()) {
      errors->Add("redis.cluster",
                  "set either redis.address (one Redis) or redis.cluster "
                  "(the seed nodes of a Redis Cluster), not both");
    }
    if (redis->cluster_size() > kMaxRedisClusterSeeds) {
      errors->Add("redis.cluster",
                  absl::StrCat(redis->cluster_size(), " seed nodes; at most ",
                               kMaxRedisClusterSeeds));
    }
    std::vector<std::string> seen;
    for (int i = 0; i < redis->cluster_size(); ++i) {
      const std::string field = absl::StrCat("redis.cluster[", i, "]");
      const std::string& address = redis->cluster(i);
      if (address.empty()) {
        errors->Add(field, "empty (host:port of a cluster node)");
        continue;
      }
      if (std::find(seen.begin(), seen.end(), address) != seen.end()) {
        errors->Add(field, absl::StrCat(Quote(address), " is listed twice"));
        continue;
      }
      seen.push_back(address);
      RedisSettings::Node node;
      check_address(field, address, &node);
      if (node.port != 0) out->cluster.push_back(node);
    }
  } else if (redis->address().empty()) {
    errors->Add("redis.address",
                "required (host:port), or redis.cluster (the seed nodes of "
                "a Redis Cluster)");
  } else {
    RedisSettings::Node node;
    check_address("redis.address", redis->address(), &node);
    out->host = node.host;
    out->port = node.port;
  }
  if (redis->pool_size() == 0) redis->set_pool_size(kDefaultRedisPool);
  if (redis->pool_size() > kMaxRedisPool) {
    errors->Add("redis.pool_size",
                OutOfRange(redis->pool_size(), 1, kMaxRedisPool));
  }
  out->pool_size = static_cast<int>(redis->pool_size());
  const size_t before = errors->size();
  out->timeout = Duration(redis->mutable_timeout(), kDefaultRedisTimeout,
                          "redis.timeout", errors);
  if (errors->size() == before && out->timeout <= absl::ZeroDuration()) {
    errors->Add("redis.timeout", "must be > 0");
  }
  const size_t before_connect = errors->size();
  out->connect_timeout =
      Duration(redis->mutable_connect_timeout(), kDefaultRedisConnectTimeout,
               "redis.connect_timeout", errors);
  if (errors->size() == before_connect &&
      out->connect_timeout <= absl::ZeroDuration()) {
    errors->Add("redis.connect_timeout", "must be > 0");
  }
  if (redis->key_prefix().empty())
    redis->set_key_prefix(kDefaultRedisKeyPrefix);
  out->key_prefix = redis->key_prefix();
  out->not_ready_in_fallback = redis->not_ready_in_fallback();
  out->fingerprint = absl::StrCat(
      redis->address(), "|", redis->pool_size(), "|", redis->timeout(), "|",
      redis->connect_timeout(), "|", redis->key_prefix(), "|",
      absl::StrJoin(redis->cluster(), ","));
}

// A route no call can reach, because an earlier one takes all its calls, is
// almost always a mistake in ordering.
void CheckReachable(const std::vector<RouteSettings>& routes, Errors* errors) {
  for (size_t j = 0; j < routes.size(); ++j) {
    if (routes[j].match.empty()) continue;
    for (size_t i = 0; i < j; ++i) {
      const RouteSettings& earlier = routes[i];
      if (earlier.match.empty()) continue;
      const bool shadowed =
          earlier.exact ? routes[j].exact && earlier.match == routes[j].match
                        : absl::StartsWith(routes[j].match, earlier.match);
      if (shadowed) {
        errors->Add(
            absl::StrCat("routes[", j, "].match"),
            absl::StrCat("unreachable: routes[", i, "] (", Quote(earlier.name),
                         ", ", earlier.exact ? "method " : "prefix ",
                         Quote(earlier.match),
                         ") comes first and takes every call this "
                         "route matches"));
        break;
      }
    }
  }
}

void CheckProxy(pb::Proxy* proxy, Errors* errors, int* stream_window,
                std::string* forwarded_for_header, int* max_receive,
                int* max_streams) {
  if (proxy->stream_window() == 0) {
    proxy->set_stream_window(kDefaultStreamWindow);
  }
  if (proxy->stream_window() > kMaxStreamWindow) {
    errors->Add("proxy.stream_window",
                OutOfRange(proxy->stream_window(), 1, kMaxStreamWindow));
  }
  *stream_window =
      static_cast<int>(std::min(proxy->stream_window(), kMaxStreamWindow));

  // gRPC metadata keys are lowercase; accept any case and store it lowered.
  std::string header = absl::AsciiStrToLower(proxy->forwarded_for_header());
  const std::string shown = Quote(proxy->forwarded_for_header());
  if (!header.empty()) {
    if (!std::all_of(header.begin(), header.end(), [](char c) {
          return absl::ascii_isdigit(c) || absl::ascii_islower(c) || c == '-' ||
                 c == '_' || c == '.';
        })) {
      errors->Add("proxy.forwarded_for_header",
                  absl::StrCat("invalid header name ", shown,
                               " (use letters, digits, '-', '_', '.')"));
    } else if (absl::StartsWith(header, "grpc-")) {
      errors->Add("proxy.forwarded_for_header",
                  absl::StrCat(shown,
                               " is reserved: names starting with "
                               "\"grpc-\" belong to gRPC"));
    } else if (absl::EndsWith(header, "-bin")) {
      errors->Add("proxy.forwarded_for_header",
                  absl::StrCat(shown,
                               " names a binary header (\"-bin\"); "
                               "use a text header such as "
                               "\"x-forwarded-for\""));
    }
  }
  proxy->set_forwarded_for_header(header);
  *forwarded_for_header = header;

  if (proxy->max_receive_message_bytes() == 0) {
    proxy->set_max_receive_message_bytes(kDefaultMessageBytes);
  }
  if (proxy->max_receive_message_bytes() > kMaxMessageBytes) {
    errors->Add(
        "proxy.max_receive_message_bytes",
        OutOfRange(proxy->max_receive_message_bytes(), 1, kMaxMessageBytes));
  }
  *max_receive = static_cast<int>(
      std::min(proxy->max_receive_message_bytes(), kMaxMessageBytes));

  if (proxy->max_concurrent_streams() == 0) {
    proxy->set_max_concurrent_streams(kDefaultMaxConcurrentStreams);
  }
  if (proxy->max_concurrent_streams() > kMaxConcurrentStreams) {
    errors->Add(
        "proxy.max_concurrent_streams",
        OutOfRange(proxy->max_concurrent_streams(), 1, kMaxConcurrentStreams));
  }
  *max_streams = static_cast<int>(
      std::min(proxy->max_concurrent_streams(), kMaxConcurrentStreams));
}

// Request header limits at the edge (server/proxy/header_limits.h has the
// same defaults and the reasoning behind them).
constexpr uint32_t kDefaultMaxHeaderListBytes = 8192 - 1024;
constexpr uint32_t kMinMaxHeaderListBytes = 1024;
constexpr uint32_t kMaxMaxHeaderListBytes = 1 << 20;
constexpr uint32_t kDefaultMaxHeaderCount = 100;
constexpr uint32_t kMaxMaxHeaderCount = 10000;
constexpr int64_t kMinMaxMemoryBytes = int64_t{16} << 20;
constexpr int64_t kMaxMaxMemoryBytes = int64_t{1} << 50;

void CheckHeaderLimits(pb::Proxy* proxy, Errors* errors, int* max_bytes,
                       int* max_count) {
  if (proxy->max_header_list_bytes() == 0) {
    proxy->set_max_header_list_bytes(kDefaultMaxHeaderListBytes);
  }
  if (proxy->max_header_list_bytes() < kMinMaxHeaderListBytes ||
      proxy->max_header_list_bytes() > kMaxMaxHeaderListBytes) {
    errors->Add("proxy.max_header_list_bytes",
                OutOfRange(proxy->max_header_list_bytes(),
                           kMinMaxHeaderListBytes, kMaxMaxHeaderListBytes));
  }
  *max_bytes = static_cast<int>(std::clamp(proxy->max_header_list_bytes(),
                                           kMinMaxHeaderListBytes,
                                           kMaxMaxHeaderListBytes));
  if (proxy->max_header_count() == 0) {
    proxy->set_max_header_count(kDefaultMaxHeaderCount);
  }
  if (proxy->max_header_count() > kMaxMaxHeaderCount) {
    errors->Add("proxy.max_header_count",
                OutOfRange(proxy->max_header_count(), 1, kMaxMaxHeaderCount));
  }
  *max_count =
      static_cast<int>(std::min(proxy->max_header_count(), kMaxMaxHeaderCount));
}

// proxy.connections (config.proto, Connections).
constexpr char kDefaultMaxIdle[] = "5m";
constexpr char kDefaultHandshakeTimeout[] = "10s";
constexpr char kDefaultMinPingInterval[] = "5m";
constexpr uint32_t kDefaultMaxPingStrikes = 2;
constexpr uint32_t kMaxMaxPingStrikes = 100;
constexpr uint32_t kDefaultEarlyCancelsPerSecond = 100;
constexpr uint32_t kDefaultEarlyCancelsBurst = 500;
constexpr uint32_t kMaxEarlyCancelsPerSecond = 1000000;
constexpr uint32_t kMaxEarlyCancelsBurst = 10000000;

void CheckConnections(pb::Connections* c, Errors* errors,
                      ConnectionSettings* out) {
  const std::string path = "proxy.connections.";
  // Each duration: its default, "0s" only where `off_allowed`, else within
  // [min, max].
  auto bounded = [&](std::string* text, const char* default_text,
                     const char* field, bool off_allowed, absl::Duration min,
                     absl::Duration max) {
    const size_t before = errors->size();
    const absl::Duration d = Duration(text, default_text, path + field, errors);
    if (errors->size() != before) return d;
    if (off_allowed && d == absl::ZeroDuration()) return d;
    if (d < min || d > max) {
      errors->Add(path + field,
                  absl::StrCat("must be between \"", CanonicalDuration(min),
                               "\" and \"", CanonicalDuration(max), "\"",
                               off_allowed ? ", or \"0s\" (off)" : "", "; got ",
                               Quote(*text)));
    }
    return d;
  };
  out->max_idle = bounded(c->mutable_max_idle(), kDefaultMaxIdle, "max_idle",
                          true, absl::Seconds(1), absl::Hours(24));
  out->max_age = bounded(c->mutable_max_age(), kNoDuration, "max_age", true,
                         absl::Seconds(1), absl::Hours(24));
  out->max_age_grace =
      bounded(c->mutable_max_age_grace(), kNoDuration, "max_age_grace", true,
              absl::Seconds(1), absl::Hours(24));
  out->handshake_timeout = bounded(
      c->mutable_handshake_timeout(), kDefaultHandshakeTimeout,
      "handshake_timeout", false, absl::Milliseconds(100), absl::Minutes(5));
  out->min_ping_interval =
      bounded(c->mutable_min_ping_interval(), kDefaultMinPingInterval,
              "min_ping_interval", false, absl::Seconds(1), absl::Hours(24));
  if (c->max_ping_strikes() == 0)
    c->set_max_ping_strikes(kDefaultMaxPingStrikes);
  if (c->max_ping_strikes() > kMaxMaxPingStrikes) {
    errors->Add(path + "max_ping_strikes",
                OutOfRange(c->max_ping_strikes(), 1, kMaxMaxPingStrikes));
  }
  out->max_ping_strikes =
      static_cast<int>(std::min(c->max_ping_strikes(), kMaxMaxPingStrikes));
  if (!c->has_early_cancels_per_second()) {
    c->set_early_cancels_per_second(kDefaultEarlyCancelsPerSecond);
  }
  if (!c->has_early_cancels_burst()) {
    c->set_early_cancels_burst(kDefaultEarlyCancelsBurst);
  }
  if (c->early_cancels_per_second() > kMaxEarlyCancelsPerSecond) {
    errors->Add(path + "early_cancels_per_second",
                OutOfRange(c->early_cancels_per_second(), 0,
                           kMaxEarlyCancelsPerSecond) +
                    "; 0 turns the defence off");
  }
  if (c->early_cancels_burst() < 1 ||
      c->early_cancels_burst() > kMaxEarlyCancelsBurst) {
    errors->Add(path + "early_cancels_burst",
                OutOfRange(c->early_cancels_burst(), 1, kMaxEarlyCancelsBurst));
  }
  out->early_cancels_per_second =
      std::min(c->early_cancels_per_second(), kMaxEarlyCancelsPerSecond);
  out->early_cancels_burst =
      std::clamp<int64_t>(c->early_cancels_burst(), 1, kMaxEarlyCancelsBurst);
}

// Hex prefix of the SHA-256 of the canonical JSON of `p`.
absl::StatusOr<std::string> HashOf(const pb::Config& p,
                                   absl::string_view source) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto printed =
      google::protobuf::util::MessageToJsonString(p, &json, options);
  if (!printed.ok()) {
    return absl::InternalError(absl::StrCat(
        source, ": cannot print the config as JSON: ",
        std::string(printed.message().data(), printed.message().size())));
  }
  return Sha256Prefix(json);
}

// Appends one SettingChange per field of `a` and `b` (messages of one
// type, scalar fields only) whose values differ, named `prefix` + field.
void DiffScalars(const google::protobuf::Message& a,
                 const google::protobuf::Message& b, const std::string& prefix,
                 std::vector<SettingChange>* out) {
  const google::protobuf::Descriptor& type = *a.GetDescriptor();
  const google::protobuf::Reflection& ra = *a.GetReflection();
  const google::protobuf::Reflection& rb = *b.GetReflection();
  for (int i = 0; i < type.field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = type.field(i);
    if (field->is_repeated() ||
        field->cpp_type() ==
            google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      continue;  // none in the restart-only sections
    }
    std::string from;
    std::string to;
    google::protobuf::TextFormat::PrintFieldValueToString(a, field, -1, &from);
    google::protobuf::TextFormat::PrintFieldValueToString(b, field, -1, &to);
    if (field->has_presence()) {
      if (!ra.HasField(a, field)) from = "unset";
      if (!rb.HasField(b, field)) to = "unset";
    }
    if (from != to) out->push_back({prefix + field->name(), from, to});
  }
}

// Prefixes each line of a multi-line status message with "<source>: ".
absl::Status WithSource(const absl::Status& status, absl::string_view source) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
    lines.push_back(absl::StrCat(source, ": ", line));
  }
  return absl::Status(status.code(), absl::StrJoin(lines, "\n"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Config>> Config::FromProto(
    const sluice::config::v1::Config& proto, std::string_view source) {
  return FromProto(proto, source, SchemaErrors());
}

absl::StatusOr<std::shared_ptr<const Config>> Config::FromProto(
    const sluice::config::v1::Config& proto, std::string_view source_view,
    const SchemaErrors& schema) {
  const absl::string_view source(source_view.data(), source_view.size());
  std::shared_ptr<Config> config(new Config());
  config->source_ = std::string(source);
  config->proto_ = proto;
  pb::Config& p = config->proto_;
  Errors errors(source, schema);

  // Listeners.
  pb::Listeners* listeners = p.mutable_listeners();
  struct Listener {
    const char* path;
    std::string* address;
    const char* default_address;
    HostPort parsed;
    bool ok;
  } parsed[4] = {
      {"listeners.data",
       listeners->mutable_data(),
       kDefaultDataAddress,
       {},
       false},
      {"listeners.admin",
       listeners->mutable_admin(),
       kDefaultAdminAddress,
       {},
       false},
      {"listeners.metrics",
       listeners->mutable_metrics(),
       kDefaultMetricsAddress,
       {},
       false},
      // Optional: empty (the default) is off.
      {"listeners.health", listeners->mutable_health(), nullptr, {}, false},
  };
  for (Listener& listener : parsed) {
    if (listener.address->empty()) {
      if (listener.default_address == nullptr) continue;
      *listener.address = listener.default_address;
    }
    std::string reason;
    listener.ok = ParseAddress(*listener.address, &listener.parsed, &reason);
    if (!listener.ok) errors.Add(listener.path, reason);
    // One that did not fit the schema took the default: no port conflict.
    if (errors.Dropped(listener.path)) listener.ok = false;
  }
  for (int j = 1; j < 4; ++j) {
    for (int i = 0; i < j; ++i) {
      const HostPort& a = parsed[i].parsed;
      const HostPort& b = parsed[j].parsed;
      if (parsed[i].ok && parsed[j].ok && a.port != 0 && a.port == b.port &&
          (a.host == b.host || Wildcard(a.host) || Wildcard(b.host))) {
        errors.Add(parsed[j].path,
                   absl::StrCat("port ", b.port, " is already used by ",
                                parsed[i].path));
        break;
      }
    }
  }
  config->data_address_ = listeners->data();
  config->admin_address_ = listeners->admin();
  config->metrics_address_ = listeners->metrics();
  config->health_address_ = listeners->health();

  // Workers: 0 stays 0 in the proto (so the hash is the same on every
  // machine); workers() resolves it to the core count.
  if (p.workers() > kMaxWorkers) {
    errors.Add("workers", absl::StrCat(OutOfRange(p.workers(), 0, kMaxWorkers),
                                       "; 0 means one per CPU core"));
  }
  unsigned workers = p.workers();
  if (workers == 0) workers = std::thread::hardware_concurrency();
  config->workers_ = static_cast<int>(std::clamp(workers, 1u, kMaxWorkers));

  config->drain_timeout_ =
      Duration(p.mutable_drain_timeout(), kDefaultDrainTimeout, "drain_timeout",
               &errors);

  CheckProxy(p.mutable_proxy(), &errors, &config->stream_window_,
             &config->forwarded_for_header_,
             &config->max_receive_message_bytes_,
             &config->max_concurrent_streams_);
  CheckHeaderLimits(p.mutable_proxy(), &errors, &config->max_header_list_bytes_,
                    &config->max_header_count_);
  config->max_memory_bytes_ = p.proxy().max_memory_bytes();
  if (config->max_memory_bytes_ < -1 ||
      (config->max_memory_bytes_ > 0 &&
       (config->max_memory_bytes_ < kMinMaxMemoryBytes ||
        config->max_memory_bytes_ > kMaxMaxMemoryBytes))) {
    errors.Add("proxy.max_memory_bytes",
               absl::StrCat(config->max_memory_bytes_,
                            " is not a ceiling: use 0 (90% of the cgroup "
                            "memory limit, if any), -1 (none) or ",
                            kMinMaxMemoryBytes, " (16 MiB) to ",
                            kMaxMaxMemoryBytes, " (1 PiB)"));
    config->max_memory_bytes_ = 0;
  }
  CheckConnections(p.mutable_proxy()->mutable_connections(), &errors,
                   &config->connections_);

  // Access log.
  if (p.has_access_log()) {
    sluice::config::v1::AccessLog* log = p.mutable_access_log();
    AccessLogSettings& a = config->access_log_;
    a.enabled = true;
    a.path = log->path();
    if (!log->has_sample_rate()) log->set_sample_rate(1.0);
    if (!(log->sample_rate() >= 0.0 && log->sample_rate() <= 1.0)) {
      errors.Add(
          "access_log.sample_rate",
          absl::StrCat("must be between 0 and 1, got ", log->sample_rate()));
    }
    a.sample_rate = log->sample_rate();
    auto check_names =
        [&errors](google::protobuf::RepeatedPtrField<std::string>* names,
                  const char* field, std::vector<std::string>* out) {
          for (int k = 0; k < names->size(); ++k) {
            std::string name = absl::AsciiStrToLower(names->Get(k));
            if (name.empty() || name[0] == ':' ||
                !std::all_of(name.begin(), name.end(), [](char c) {
                  return absl::ascii_isdigit(c) || absl::ascii_islower(c) ||
                         c == '-' || c == '_' || c == '.';
                })) {
              errors.Add(
                  absl::StrCat("access_log.", field, "[", k, "]"),
                  absl::StrCat("invalid header name ", Quote(names->Get(k))));
            }
            *names->Mutable(k) = name;
            out->push_back(name);
          }
        };
    check_names(log->mutable_headers(), "headers", &a.headers);
    check_names(log->mutable_sensitive_headers(), "sensitive_headers",
                &a.sensitive_headers);
    for (const char* always :
         {"authorization", "cookie", "proxy-authorization", "x-api-key"}) {
      if (std::find(a.sensitive_headers.begin(), a.sensitive_headers.end(),
                    always) == a.sensitive_headers.end()) {
        a.sensitive_headers.push_back(always);
      }
    }
  }

  // Upstreams.
  if (p.upstreams_size() == 0) {
    errors.Add("upstreams", "at least one upstream is required");
  }
  absl::flat_hash_map<std::string, int> upstream_index;
  for (int i = 0; i < p.upstreams_size(); ++i) {
    const std::string path = absl::StrCat("upstreams[", i, "]");
    UpstreamSettings settings;
    CheckUpstream(p.mutable_upstreams(i), path, &errors, &settings);
    if (!settings.name.empty()) {
      const auto [it, inserted] = upstream_index.try_emplace(settings.name, i);
      if (!inserted) {
        errors.Add(path + ".name",
                   absl::StrCat("duplicate name ", Quote(settings.name),
                                " (first at upstreams[", it->second, "])"));
      }
    }
    config->upstreams_.push_back(std::move(settings));
  }

  // Routes.
  if (p.routes_size() == 0) {
    errors.Add("routes", "at least one route is required");
  }
  absl::flat_hash_map<std::string, int> route_index;
  for (int i = 0; i < p.routes_size(); ++i) {
    const std::string path = absl::StrCat("routes[", i, "]");
    pb::Route* route = p.mutable_routes(i);
    RouteSettings settings;
    settings.name = route->name();
    if (route->name().empty()) {
      errors.Add(path + ".name", "required");
    } else if (!ValidName(route->name())) {
      errors.Add(path + ".name",
                 absl::StrCat("invalid name ", Quote(route->name()),
                              " (use letters, digits, '_', '.', '-')"));
    } else {
      const auto [it, inserted] = route_index.try_emplace(route->name(), i);
      if (!inserted) {
        errors.Add(path + ".name",
                   absl::StrCat("duplicate name ", Quote(route->name()),
                                " (first at routes[", it->second, "])"));
      }
    }
    CheckMatch(*route, path, &errors, &settings);
    settings.upstream = route->upstream();
    if (route->upstream().empty()) {
      errors.Add(path + ".upstream", "required");
    } else if (const auto it = upstream_index.find(route->upstream());
               it == upstream_index.end()) {
      // An upstream whose name did not fit the schema may be this one.
      bool names_dropped =
          p.upstreams_size() == 0 && errors.Dropped("upstreams");
      for (int u = 0; u < p.upstreams_size() && !names_dropped; ++u) {
        names_dropped = errors.Dropped(absl::StrCat("upstreams[", u, "].name"));
      }
      if (!names_dropped) {
        errors.Add(path + ".upstream",
                   absl::StrCat("unknown upstream ", Quote(route->upstream())));
      }
    } else {
      settings.upstream_index = it->second;
    }
    CheckDeadline(route->mutable_deadline(), path + ".deadline", &errors,
                  &settings.deadline);
    CheckLimits(route, path, &errors, &settings);
    config->routes_.push_back(std::move(settings));
  }
  CheckReachable(config->routes_, &errors);
  CheckRedis(&p, config->routes_, &errors, &config->redis_);

  // Settings that point at other files.
  const ConfigErrorSink sink = [&errors](const std::string& field,
                                         const std::string& reason) {
    errors.Add(field, reason);
  };
  if (p.has_tls()) CheckServerTls(p.mutable_tls(), sink, &config->tls_);
  for (int i = 0; i < p.upstreams_size(); ++i) {
    CheckUpstreamTls(p.upstreams(i).tls(),
                     absl::StrCat("upstreams[", i, "].tls"), sink);
  }
  if (config->redis_.enabled) {
    ReadRedisSecrets(p.redis(), sink, &config->redis_);
  }
  config->admin_token_ = ReadAdminToken(p.admin(), sink);
  config->methods_ = KnownMethods(p.metrics(), config->routes_, sink);

  if (!errors.empty()) return errors.ToStatus();

  auto hash = HashOf(p, source);
  if (!hash.ok()) return hash.status();
  config->hash_ = *std::move(hash);
  return std::shared_ptr<const Config>(std::move(config));
}

std::vector<SettingChange> Config::RestartOnlyChanges(
    const Config& running) const {
  const pb::Config& a = running.proto_;
  const pb::Config& b = proto_;
  std::vector<SettingChange> changes;
  DiffScalars(a.listeners(), b.listeners(), "listeners.", &changes);
  if (a.workers() != b.workers()) {
    changes.push_back(
        {"workers", absl::StrCat(a.workers()), absl::StrCat(b.workers())});
  }
  // The data port's server is built with these.
  for (const char* name :
       {"max_receive_message_bytes", "max_concurrent_streams", "bdp_probe",
        "max_header_list_bytes"}) {
    const auto* field = pb::Proxy::descriptor()->FindFieldByName(name);
    std::string from;
    std::string to;
    google::protobuf::TextFormat::PrintFieldValueToString(a.proxy(), field, -1,
                                                          &from);
    google::protobuf::TextFormat::PrintFieldValueToString(b.proxy(), field, -1,
                                                          &to);
    if (from != to) changes.push_back({absl::StrCat("proxy.", name), from, to});
  }
  DiffScalars(a.proxy().connections(), b.proxy().connections(),
              "proxy.connections.", &changes);
  if (a.has_tls() != b.has_tls()) {
    changes.push_back({"tls", a.has_tls() ? "set" : "absent",
                       b.has_tls() ? "set" : "absent"});
  } else if (a.has_tls()) {
    DiffScalars(a.tls(), b.tls(), "tls.", &changes);
  }
  return changes;
}

absl::StatusOr<std::shared_ptr<const Config>> Config::WithRestartOnlyOf(
    const Config& running) const {
  std::shared_ptr<Config> config(new Config(*this));
  pb::Config& p = config->proto_;
  const pb::Config& r = running.proto_;
  *p.mutable_listeners() = r.listeners();
  p.set_workers(r.workers());
  pb::Proxy* proxy = p.mutable_proxy();
  proxy->set_max_receive_message_bytes(r.proxy().max_receive_message_bytes());
  proxy->set_max_concurrent_streams(r.proxy().max_concurrent_streams());
  proxy->set_bdp_probe(r.proxy().bdp_probe());
  proxy->set_max_header_list_bytes(r.proxy().max_header_list_bytes());
  *proxy->mutable_connections() = r.proxy().connections();
  if (r.has_tls()) {
    *p.mutable_tls() = r.tls();
  } else {
    p.clear_tls();
  }
  config->data_address_ = running.data_address_;
  config->admin_address_ = running.admin_address_;
  config->metrics_address_ = running.metrics_address_;
  config->health_address_ = running.health_address_;
  config->workers_ = running.workers_;
  config->max_receive_message_bytes_ = running.max_receive_message_bytes_;
  config->max_concurrent_streams_ = running.max_concurrent_streams_;
  config->max_header_list_bytes_ = running.max_header_list_bytes_;
  config->connections_ = running.connections_;
  config->tls_ = running.tls_;
  auto hash = HashOf(p, source_);
  if (!hash.ok()) return hash.status();
  config->hash_ = *std::move(hash);
  return std::shared_ptr<const Config>(std::move(config));
}

std::string CanonicalDuration(absl::Duration d) {
  return d == absl::ZeroDuration() ? "0s" : absl::FormatDuration(d);
}

absl::StatusOr<std::shared_ptr<const Config>> ParseConfigYaml(
    std::string_view yaml, std::string_view source_view,
    const std::string& base_dir, const ConfigEdit& edit) {
  const absl::string_view source(source_view.data(), source_view.size());
  pb::Config proto;
  // Schema errors do not hide the semantic ones: what fits the schema is
  // checked too, and both are reported at once.
  SchemaErrors schema;
  if (absl::Status status = YamlTextToMessagePartial(yaml, &proto, &schema);
      !status.ok()) {
    return WithSource(status, source);
  }
  if (!base_dir.empty()) ResolveRelativePaths(base_dir, &proto);
  if (edit) edit(&proto);
  return Config::FromProto(proto, source_view, schema);
}

absl::StatusOr<std::shared_ptr<const Config>> LoadConfigFile(
    const std::string& path, const ConfigEdit& edit) {
  const FileRead file = ReadFileUpTo(path, kMaxFileBytes);
  if (file.open_errno != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": cannot open config file: ", std::strerror(file.open_errno)));
  }
  if (file.read_errno != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": cannot read config file: ", std::strerror(file.read_errno)));
  }
  if (file.too_large) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": config file is larger than ", kMaxFileBytes >> 20, " MiB"));
  }
  const size_t slash = path.rfind('/');
  const std::string base_dir =
      slash == std::string::npos ? "" : path.substr(0, slash + 1);
  return ParseConfigYaml(file.bytes, path, base_dir, edit);
}

}  // namespace sluice
