// Schema-aware YAML -> protobuf JSON conversion.
//
// The YAML document is walked alongside a protobuf Descriptor, so that every
// map key must be a field name of the message at that point, and every
// scalar is emitted with the JSON type its field needs (a string field gets a
// JSON string even when the YAML scalar looks like a number). The output is
// meant for google::protobuf::util::JsonStringToMessage: the protobuf JSON
// mapping stays the single definition of how a config maps to the message,
// while this layer gives errors that name the YAML path and line.
//
// Stateless free functions; safe to call from any thread. Only used while
// loading configuration, never on the data path.
#ifndef SLUICE_SERVER_CONFIG_YAML_TO_JSON_H_
#define SLUICE_SERVER_CONFIG_YAML_TO_JSON_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "yaml-cpp/node/node.h"

namespace sluice {

// Converts one parsed YAML document to JSON for `descriptor`. A null document
// converts to "{}". All problems found are reported, one line each, in an
// InvalidArgument status: "<field.path> (line N): <reason>", for example
//   routes[1].matc (line 7): unknown field "matc" (did you mean "match"?)
//   workers (line 2): expected an unsigned integer, got "abc"
// Paths use proto field names and [i] for list elements; "top level" stands
// for the document itself.
absl::StatusOr<std::string> YamlToJson(
    const YAML::Node& yaml, const google::protobuf::Descriptor& descriptor);

// Parses YAML text (exactly one document) and converts it as YamlToJson does.
// Also reports YAML syntax errors ("invalid YAML (line 3, column 7): ..."),
// an empty document, and more than one document.
absl::StatusOr<std::string> YamlTextToJson(
    std::string_view yaml_text, const google::protobuf::Descriptor& descriptor);

// YamlTextToJson followed by JsonStringToMessage into `message` (cleared
// first), using message->GetDescriptor() as the schema.
absl::Status YamlTextToMessage(std::string_view yaml_text,
                               google::protobuf::Message* message);

// The schema errors of a document that was read nonetheless.
struct SchemaErrors {
  // One line per problem, in YamlToJson's form.
  std::vector<std::string> lines;
  // The paths whose value did not fit the schema ("workers",
  // "routes[0].match.method", "upstreams[1]"): the message leaves such a
  // field unset, and a list element that did not fit becomes an empty one
  // (so the other elements keep their indexes). A check of a dropped value
  // would judge a value nobody wrote. A misspelled key with a "did you
  // mean" suggestion counts as the suggested field dropped (unless that
  // field is set too); other unknown fields, duplicate keys and a second
  // alternative of a oneof drop nothing the schema knows.
  std::vector<std::string> dropped;
};

// As YamlTextToMessage, but schema errors do not stop the reading: every
// value that fits the schema goes into `message`, and the others are
// reported in `errors` (both empty: the document fits). Fails only when
// there is nothing to read: YAML syntax, no document or several, a top
// level that is not a map.
absl::Status YamlTextToMessagePartial(std::string_view yaml_text,
                                      google::protobuf::Message* message,
                                      SchemaErrors* errors);

}  // namespace sluice

#endif  // SLUICE_SERVER_CONFIG_YAML_TO_JSON_H_
