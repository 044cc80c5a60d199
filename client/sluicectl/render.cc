#include "client/sluicectl/render.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/sluicectl/table.h"
#include "google/protobuf/util/json_util.h"

namespace sluice::sluicectl {
namespace {

using sluice::admin::v1::LimitStatus;

constexpr char kNone[] = "-";

std::string Number(double v) { return absl::StrFormat("%.6g", v); }

std::string RateCell(const LimitStatus& l) {
  if (l.rate_per_second() <= 0) return kNone;
  // A keyed limit has one bucket per key: its tokens are in the top keys.
  const std::string tokens =
      l.key_size() > 0 ? kNone : absl::StrFormat("%.1f", l.tokens());
  return absl::StrCat(Number(l.rate_per_second()), "/", l.burst(), "/", tokens);
}

std::string KeysCell(const LimitStatus& l) {
  if (l.key_size() == 0) return kNone;
  return absl::StrCat(l.keys(), " (", absl::StrJoin(l.key(), ","), ")");
}

}  // namespace

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  // Printing a valid message cannot fail; an empty object is the fallback.
  if (!google::protobuf::util::MessageToJsonString(message, &json, options)
           .ok()) {
    json = "{}";
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

std::string FormatUptime(double seconds) {
  if (!(seconds >= 1)) return absl::StrFormat("%.1fs", std::max(seconds, 0.0));
  return absl::FormatDuration(absl::Seconds(std::floor(seconds)));
}

std::string RenderStatus(const sluice::admin::v1::GetStatusResponse& s) {
  TextTable t;
  t.AddRow({"version", s.version()});
  t.AddRow({"uptime", FormatUptime(s.uptime_seconds())});
  t.AddRow({"config hash", s.config_hash()});
  t.AddRow({"workers", absl::StrCat(s.workers())});
  t.AddRow({"calls in flight", absl::StrCat(s.calls_in_flight())});
  t.AddRow({"draining", s.draining() ? "yes" : "no"});
  t.AddRow({"data address", s.data_address()});
  t.AddRow({"admin address", s.admin_address()});
  t.AddRow({"metrics address", s.metrics_address()});
  if (!s.health_address().empty()) {
    t.AddRow({"health address", s.health_address()});
  }
  return t.Render();
}

std::string RenderConfig(const sluice::admin::v1::GetConfigResponse& c) {
  TextTable t;
  t.AddRow({"source", c.source()});
  t.AddRow({"hash", c.config_hash()});
  std::string out = t.Render();
  out += "\n";
  out += c.config_json();
  if (out.back() != '\n') out += '\n';
  return out;
}

std::string RenderLimits(const std::vector<const LimitStatus*>& limits) {
  if (limits.empty()) return "no limits configured\n";
  TextTable main({"ROUTE", "LIMIT", "RATE/BURST/TOKENS", "KEYS", "IN USE/MAX",
                  "QUEUE/MAX", "MSG/S", "ADMITTED", "REJECTED", "DRY-RUN",
                  "QUEUED", "OVERRIDDEN"});
  TextTable keys({"ROUTE", "LIMIT", "KEY", "TOKENS"});
  TextTable global({"ROUTE", "LIMIT", "REDIS", "LINK", "STATE", "FALLBACK",
                    "LEASE", "LEASED", "ERROR"});
  TextTable fair({"ROUTE", "LIMIT", "KEY", "KEYS/MAX", "PER KEY", "QUEUE/KEY",
                  "FULL", "KEY FULL", "OVERFLOW"});
  TextTable fair_keys({"ROUTE", "LIMIT", "KEY", "IN USE", "QUEUED"});
  TextTable adaptive({"ROUTE", "LIMIT", "LIMIT/MIN/MAX", "GRADIENT",
                      "RTT LONG/SHORT", "SAMPLES", "DROPPED", "PROBES",
                      "CALLS"});
  for (const LimitStatus* l : limits) {
    if (l->has_fair_queue()) {
      const auto& f = l->fair_queue();
      fair.AddRow({
          l->route(),
          l->name(),
          absl::StrJoin(f.key(), ","),
          absl::StrCat(f.keys(), "/", f.max_keys()),
          f.max_per_key() > 0 ? absl::StrCat(f.max_per_key()) : kNone,
          f.max_queue_per_key() > 0 ? absl::StrCat(f.max_queue_per_key())
                                    : kNone,
          absl::StrCat(f.rejected_queue_full()),
          absl::StrCat(f.rejected_key_queue_full()),
          absl::StrCat(f.overflow_acquisitions()),
      });
      for (const auto& k : f.top_keys()) {
        fair_keys.AddRow({l->route(), l->name(), absl::CHexEscape(k.key()),
                          absl::StrCat(k.in_flight()),
                          absl::StrCat(k.queued())});
      }
    }
    if (l->has_adaptive()) {
      const auto& a = l->adaptive();
      adaptive.AddRow({
          l->route(),
          l->name(),
          absl::StrCat(a.limit(), "/", a.min(), "/", a.max(),
                       a.probing() ? " (probing)" : ""),
          absl::StrFormat("%.2f", a.gradient()),
          absl::StrFormat("%.1fms/%.1fms", a.long_rtt_seconds() * 1e3,
                          a.short_rtt_seconds() * 1e3),
          absl::StrCat(a.samples()),
          absl::StrCat(a.dropped_samples()),
          absl::StrCat(a.probes()),
          absl::StrCat(a.calls_in_flight()),
      });
    }
    if (l->has_global()) {
      const auto& g = l->global();
      global.AddRow({
          l->route(),
          l->name(),
          g.redis(),
          g.link(),
          g.redis_state(),
          absl::StrCat(g.fallback(), g.fallback_active() ? " (in force)" : ""),
          absl::StrCat(g.lease()),
          absl::StrCat(g.leased_tokens()),
          g.redis_error().empty() ? kNone : g.redis_error(),
      });
    }
    const bool conc = l->concurrency_max() > 0;
    main.AddRow({
        l->route(),
        l->dry_run() ? absl::StrCat(l->name(), " (dry run)") : l->name(),
        RateCell(*l),
        KeysCell(*l),
        conc ? absl::StrCat(l->in_flight(), "/", l->concurrency_max()) : kNone,
        conc ? absl::StrCat(l->queue_depth(), "/", l->queue_max()) : kNone,
        l->messages_per_second() > 0 ? absl::StrCat(l->messages_per_second())
                                     : kNone,
        absl::StrCat(l->admitted()),
        absl::StrCat(l->rejected()),
        absl::StrCat(l->dry_run_rejected()),
        absl::StrCat(l->queued()),
        l->overridden() ? "yes" : "no",
    });
    for (const auto& k : l->top_keys()) {
      keys.AddRow({l->route(), l->name(), absl::CHexEscape(k.key()),
                   absl::StrFormat("%.1f", k.tokens())});
    }
  }
  std::string out = main.Render();
  if (!keys.empty()) {
    out += "\ntop keys (fewest tokens left first):\n";
    out += keys.Render();
  }
  if (!global.empty()) {
    out += "\nglobal limits (Redis):\n";
    out += global.Render();
  }
  if (!fair.empty()) {
    out += "\nconcurrency queued per key (round robin between keys):\n";
    out += fair.Render();
  }
  if (!fair_keys.empty()) {
    out += "\nbusiest keys (most calls in use + queued first):\n";
    out += fair_keys.Render();
  }
  if (!adaptive.empty()) {
    out += "\nadaptive concurrency:\n";
    out += adaptive.Render();
  }
  return out;
}

std::string RenderLimits(const sluice::admin::v1::ListLimitsResponse& list) {
  std::vector<const LimitStatus*> limits;
  for (const auto& l : list.limits()) limits.push_back(&l);
  return RenderLimits(limits);
}

}  // namespace sluice::sluicectl
