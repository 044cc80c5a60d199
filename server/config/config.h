// Validated, immutable Sluice configuration.
//
// A Config is built once from the YAML file (or from flags), validated as a
// whole, and then never changed: the daemon swaps whole snapshots as
// std::shared_ptr<const Config>, so any thread may read one without a lock.
#ifndef SLUICE_SERVER_CONFIG_CONFIG_H_
#define SLUICE_SERVER_CONFIG_CONFIG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/config/yaml_to_json.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice {

// A route's deadline policy with its durations parsed.
struct DeadlineSettings {
  absl::Duration default_timeout = absl::ZeroDuration();  // 0: none
  absl::Duration max_timeout = absl::ZeroDuration();      // 0: no bound
  absl::Duration offset = absl::ZeroDuration();
  absl::Duration min_budget = absl::Milliseconds(1);
  absl::Duration stream_idle_timeout = absl::ZeroDuration();  // 0: none
};

struct UpstreamSettings {
  std::string name;
  std::string target;
  int channels = 2;
  std::string lb_policy = "round_robin";
  absl::Duration keepalive_time = absl::Seconds(330);  // 0: off
  absl::Duration keepalive_timeout = absl::Seconds(20);
  bool keepalive_permit_without_calls = false;
  int max_message_bytes = 4 << 20;
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  bool required = false;
  // health_check: also Check the upstream's grpc.health.v1.Health.
  bool health_check = false;
  std::string health_service;
  absl::Duration health_interval = absl::Seconds(5);
  absl::Duration health_timeout = absl::Seconds(1);
  // reconnect: gRPC's connection backoff (defaults depend on the target:
  // these are the loopback / unix ones).
  absl::Duration reconnect_initial_backoff = absl::Milliseconds(100);
  absl::Duration reconnect_max_backoff = absl::Seconds(1);
  absl::Duration connect_timeout = absl::Seconds(1);
  // How long a call waits for a connecting upstream (0: no wait).
  absl::Duration connect_wait = absl::Seconds(1);
  // Learn method shapes from the upstream's server reflection.
  bool reflection = true;
};

// proxy.connections: the data port's connection lifetime limits and ping
// policy (gRPC server arguments; zero durations mean "off" where the field
// allows it).
struct ConnectionSettings {
  absl::Duration max_idle = absl::Minutes(5);           // 0: never
  absl::Duration max_age = absl::ZeroDuration();        // 0: no limit
  absl::Duration max_age_grace = absl::ZeroDuration();  // 0: no limit
  absl::Duration handshake_timeout = absl::Seconds(10);
  absl::Duration min_ping_interval = absl::Minutes(5);
  int max_ping_strikes = 2;
  // The early-cancel budget per client address; 0 per second: off.
  int64_t early_cancels_per_second = 100;
  int64_t early_cancels_burst = 500;
};

// One limit with its defaults applied and durations parsed.
// concurrency.adaptive (the fields of AdaptiveLimit::Settings).
struct AdaptiveConcurrencySettings {
  int64_t min = 1;
  int64_t max = 0;
  int64_t initial = 20;
  absl::Duration window = absl::Milliseconds(100);
  int64_t window_samples = 10;
  double smoothing = 0.2;
  double rtt_tolerance = 1.2;
  int64_t long_window = 600;
  absl::Duration probe_interval = absl::Seconds(30);
  int64_t probe_samples = 10;
  absl::Duration probe_timeout = absl::Seconds(2);
  double probe_jitter = 0.1;
};

struct LimitSettings {
  std::string name;
  // rate: tokens per `rate_period` (0 count: no rate limit).
  int64_t rate_count = 0;
  absl::Duration rate_period = absl::Seconds(1);
  int64_t rate_burst = 0;
  // concurrency (0 max: none).
  int64_t concurrency_max = 0;
  int64_t concurrency_queue = 0;
  absl::Duration concurrency_max_wait = absl::Seconds(1);
  // Fair queuing: key parts (as `key`); empty: one FIFO.
  std::vector<std::string> concurrency_key;
  int64_t concurrency_max_per_key = 0;        // 0: none
  int64_t concurrency_max_queue_per_key = 0;  // 0: only concurrency_queue
  // Adaptive: concurrency_max is then adaptive.initial (the limiter's
  // starting value), and the limit moves between adaptive.min and .max.
  bool concurrency_adaptive = false;
  AdaptiveConcurrencySettings adaptive;
  // messages (0 per_second: none).
  int64_t messages_per_second = 0;
  int64_t messages_burst = 0;
  bool messages_reject = false;  // false: pace
  bool messages_client_to_upstream = false;
  // key parts, as configured: "header:x-api-key", "peer", "method".
  std::vector<std::string> key;
  int64_t max_keys = 10000;
  std::string default_key = "default";
  bool dry_run = false;
  // scope: global (the rate is shared by every replica through Redis).
  bool global = false;
  std::string global_fallback = "local";  // fail_open, fail_closed, local
  int64_t expected_replicas = 1;
  int64_t lease = 1;
  // Canonical text of the definition: equal strings mean the same limit,
  // whose live state a reload keeps.
  std::string fingerprint;
};

struct RouteSettings {
  std::string name;
  bool exact = false;      // true: `match` is a full method name
  std::string match;       // the method name or the prefix
  std::string upstream;    // upstream name
  int upstream_index = 0;  // index into Config::upstreams()
  DeadlineSettings deadline;
  std::vector<LimitSettings> limits;
  bool rate_limit_headers = false;
};

struct AccessLogSettings {
  bool enabled = false;
  std::string path;  // empty: stdout
  double sample_rate = 1.0;
  std::vector<std::string> headers;            // logged (lowercase)
  std::vector<std::string> sensitive_headers;  // redacted (lowercase)
};

// Downstream TLS on the data port (enabled: cert_file and key_file set).
struct ServerTlsSettings {
  bool enabled = false;
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;  // empty: no client certificates asked for
  bool require_client_cert = false;
  absl::Duration refresh_interval = absl::Seconds(60);
};

// The Redis store of global limits (enabled: the `redis` section is set).
struct RedisSettings {
  bool enabled = false;
  std::string host;
  int port = 6379;
  // redis.cluster: the seed nodes of a Redis Cluster (host without
  // brackets); empty: one server at host:port.
  struct Node {
    std::string host;
    int port = 0;
  };
  std::vector<Node> cluster;
  int pool_size = 2;
  absl::Duration timeout = absl::Milliseconds(50);
  absl::Duration connect_timeout = absl::Seconds(1);
  std::string key_prefix = "sluice:";
  // AUTH secrets read from redis.username_file / redis.password_file
  // (empty: unset). Never logged, never shown by the admin API.
  std::string username;
  std::string password;
  bool not_ready_in_fallback = false;
  // Canonical text: equal strings mean the same connection settings
  // (the secrets enter as a SHA-256 of their contents, so a rotated file
  // behind the same path counts as a change).
  std::string fingerprint;
};

// A setting whose value differs between two configs: the field path
// ("listeners.admin", "workers", "tls.cert_file") and both values in
// protobuf text form ("\"127.0.0.1:9901\"", "2", "true"; "unset", and for
// the whole tls section "set"/"absent").
struct SettingChange {
  std::string field;
  std::string from;
  std::string to;
};

// One gRPC method known from metrics.descriptor_sets or an exact route.
struct MethodInfo {
  std::string path;     // "/pkg.Service/Method"
  std::string service;  // "pkg.Service"
  std::string method;   // "Method"
  // go-grpc-prometheus grpc_type: unary, client_stream, server_stream,
  // bidi_stream, or unknown (named by a route only).
  std::string type;
};

class Config {
 public:
  // Everything a field leaves unset already holds its documented default.
  const sluice::config::v1::Config& proto() const { return proto_; }
  const std::string& data_address() const { return data_address_; }
  const std::string& admin_address() const { return admin_address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  // listeners.health: the health-only gRPC port; empty: none.
  const std::string& health_address() const { return health_address_; }
  int workers() const { return workers_; }  // resolved: never 0
  absl::Duration drain_timeout() const { return drain_timeout_; }
  int stream_window() const { return stream_window_; }
  const std::string& forwarded_for_header() const {
    return forwarded_for_header_;
  }
  int max_receive_message_bytes() const { return max_receive_message_bytes_; }
  int max_concurrent_streams() const { return max_concurrent_streams_; }
  // Request header limits at the edge (name + value + 32 per header).
  int max_header_list_bytes() const { return max_header_list_bytes_; }
  int max_header_count() const { return max_header_count_; }
  // proxy.max_memory_bytes as configured: > 0 bytes, 0 from the cgroup
  // limit, -1 none (server/proxy/memory_guard.h resolves it).
  int64_t max_memory_bytes() const { return max_memory_bytes_; }
  bool bdp_probe() const { return proto_.proxy().bdp_probe(); }
  const ConnectionSettings& connections() const { return connections_; }
  const AccessLogSettings& access_log() const { return access_log_; }
  const ServerTlsSettings& tls() const { return tls_; }
  const RedisSettings& redis() const { return redis_; }
  // The admin bearer token read from admin.bearer_token_file; empty: none.
  const std::string& admin_token() const { return admin_token_; }
  // Methods with their own metric labels, sorted by path, unique.
  const std::vector<MethodInfo>& methods() const { return methods_; }
  const std::vector<UpstreamSettings>& upstreams() const { return upstreams_; }
  const std::vector<RouteSettings>& routes() const { return routes_; }
  // Hex prefix (16 chars) of SHA-256 over the canonical JSON of proto()
  // (durations in CanonicalDuration form).
  const std::string& hash() const { return hash_; }
  // File path, or "flags".
  const std::string& source() const { return source_; }

  // Validates `proto` and builds a Config. Errors: one line per problem,
  // "<source>: <field.path>: <reason>".
  static absl::StatusOr<std::shared_ptr<const Config>> FromProto(
      const sluice::config::v1::Config& proto, std::string_view source);
  // The same for a proto read despite the schema errors `schema`: those
  // are reported first, then every semantic error except the ones about
  // values the schema reading dropped.
  static absl::StatusOr<std::shared_ptr<const Config>> FromProto(
      const sluice::config::v1::Config& proto, std::string_view source,
      const SchemaErrors& schema);

  // Restart-only settings: what the running process was built with and a
  // reload cannot change. `listeners`, `workers`, the `tls` section and
  // the data port's server settings `proxy.max_receive_message_bytes`,
  // `proxy.max_concurrent_streams`, `proxy.bdp_probe` and
  // `proxy.max_header_list_bytes` (it sets gRPC's transport limit too),
  // `proxy.connections`.
  //
  // The restart-only settings of this config that differ from `running`'s.
  std::vector<SettingChange> RestartOnlyChanges(const Config& running) const;
  // This config with `running`'s restart-only settings: what a reload puts
  // in effect. Its proto and hash are those of the result.
  absl::StatusOr<std::shared_ptr<const Config>> WithRestartOnlyOf(
      const Config& running) const;

 private:
  Config() = default;
  sluice::config::v1::Config proto_;
  std::string data_address_;
  std::string admin_address_;
  std::string metrics_address_;
  std::string health_address_;
  int workers_ = 1;
  absl::Duration drain_timeout_ = absl::Seconds(30);
  int stream_window_ = 2;
  std::string forwarded_for_header_;
  int max_receive_message_bytes_ = 4 << 20;
  int max_concurrent_streams_ = 1000;
  int max_header_list_bytes_ = 7168;
  int max_header_count_ = 100;
  int64_t max_memory_bytes_ = 0;
  ConnectionSettings connections_;
  AccessLogSettings access_log_;
  ServerTlsSettings tls_;
  RedisSettings redis_;
  std::string admin_token_;
  std::vector<MethodInfo> methods_;
  std::vector<UpstreamSettings> upstreams_;
  std::vector<RouteSettings> routes_;
  std::string hash_;
  std::string source_;
};

// The text a duration field holds once loaded, whatever its spelling:
// absl's shortest form ("1s" for "1000ms", "1.5s", "250ms", "1h30m") and
// "0s" for zero ("0", "0ms"). Equal durations, equal text, equal hash.
std::string CanonicalDuration(absl::Duration d);

// Parses YAML text (the file's contents) into a validated Config. `source`
// names the file in error messages. With `base_dir` ("dir/"), relative
// file paths in the config are taken relative to it.
// `edit`, if set, changes the parsed proto before it is validated and its
// unset fields get their defaults (command-line overrides: a default that
// depends on another field, such as an upstream's reconnect backoff on its
// target, then follows the overridden value).
using ConfigEdit = std::function<void(sluice::config::v1::Config*)>;
absl::StatusOr<std::shared_ptr<const Config>> ParseConfigYaml(
    std::string_view yaml, std::string_view source,
    const std::string& base_dir = "", const ConfigEdit& edit = nullptr);

// Reads and parses a config file. A missing/unreadable file is an error
// naming the path. Relative file paths in it (access_log.path, tls.*,
// upstreams[].tls.*, admin.bearer_token_file, metrics.descriptor_sets,
// redis.password_file, redis.username_file) are
// relative to the file's directory.
absl::StatusOr<std::shared_ptr<const Config>> LoadConfigFile(
    const std::string& path, const ConfigEdit& edit = nullptr);

}  // namespace sluice

#endif  // SLUICE_SERVER_CONFIG_CONFIG_H_
