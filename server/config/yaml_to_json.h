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

}  // namespace sluice

#endif  // SLUICE_SERVER_CONFIG_YAML_TO_JSON_H_
