#include "server/config/yaml_to_json.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/json_string.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace sluice {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::OneofDescriptor;

// A scalar shown in an error message: quoted, escaped, and cut if long.
std::string Quote(absl::string_view s) {
  constexpr size_t kMax = 60;
  if (s.size() > kMax) {
    return absl::StrCat("\"", absl::CHexEscape(s.substr(0, kMax)), "\"...");
  }
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

// Whether `s` can stand in a field path as it is: a non-empty run of
// letters, digits and underscores (every protobuf field name is one).
bool IsPlainName(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') {
      return false;
    }
  }
  return true;
}

// What a YAML node is, for "expected X, got Y".
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Undefined:
      break;
  }
  return "an undefined node";
}

// What a field's value must be, for "expected X, got Y".
std::string Expected(const FieldDescriptor& field) {
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
      return "an integer";
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      return "an unsigned integer";
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return "a number";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "true or false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return "an enum value name";
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return "a map";
  }
  return "a value";
}

// YAML text is validated UTF-8 (see below): copied as it is.
void AppendJson(absl::string_view s, std::string* out) {
  AppendJsonString(std::string_view(s.data(), s.size()), NonAscii::kKeep, out);
}

// Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates), as the
// protobuf JSON parser requires of every string.
bool ValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if (next < (k == 1 ? low : 0x80) || next > (k == 1 ? high : 0xBF)) {
        return false;
      }
    }
    i += extra + 1;
  }
  return true;
}

// Edit distance, for "did you mean". Names are short, so O(n*m) is fine.
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "drainTimeout", "Drain-Timeout" and "drain_timeout" all become
// "draintimeout".
std::string Normalize(absl::string_view name) {
  std::string out;
  for (char c : name) {
    if (c != '_' && c != '-') out.push_back(absl::ascii_tolower(c));
  }
  return out;
}

// Why `name` is not a field of `descriptor`; `*meant` is set to the field
// suggested ("did you mean"), or null.
std::string UnknownFieldReason(const Descriptor& descriptor,
                               const std::string& name,
                               const FieldDescriptor** meant) {
  *meant = nullptr;
  // A suggestion only when it is unambiguous: same name but for case or
  // separators, or one (short names) or two typos away.
  const std::string normalized = Normalize(name);
  const size_t budget = name.size() <= 4 ? 1 : 2;
  const FieldDescriptor* best = nullptr;
  size_t best_distance = budget + 1;
  bool tie = false;
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const FieldDescriptor* field = descriptor.field(i);
    const size_t distance = Normalize(field->name()) == normalized
                                ? 0
                                : EditDistance(name, field->name());
    if (distance < best_distance) {
      best = field;
      best_distance = distance;
      tie = false;
    } else if (distance == best_distance) {
      tie = true;
    }
  }
  if (best != nullptr && !tie) {
    *meant = best;
    return absl::StrCat("unknown field ", Quote(name), " (did you mean \"",
                        best->name(), "\"?)");
  }
  std::vector<std::string> names;
  for (int i = 0; i < descriptor.field_count(); ++i) {
    names.push_back(descriptor.field(i)->name());
  }
  return absl::StrCat("unknown field ", Quote(name),
                      " (known fields: ", absl::StrJoin(names, ", "), ")");
}

// Walks one YAML document alongside a Descriptor and writes JSON. Collects
// every error instead of stopping at the first; the JSON holds every value
// that fits the schema, and leaves out (or, in a list, empties) the ones
// that do not, listed in dropped(). Single use, single thread.
class Converter {
 public:
  void Message(const YAML::Node& node, const Descriptor& descriptor,
               const std::string& path, std::string* out);

  const std::vector<std::string>& errors() const { return errors_; }
  // Paths whose value did not fit the schema and was left out of the JSON
  // (a list element's value is replaced by an empty one instead), and the
  // fields a misspelled key was probably meant to be.
  const std::vector<std::string>& dropped() const { return dropped_; }

 private:
  void Error(const std::string& path, const YAML::Node& node,
             absl::string_view reason);
  void MapField(const YAML::Node& node, const FieldDescriptor& field,
                const std::string& path, std::string* out);
  void RepeatedField(const YAML::Node& node, const FieldDescriptor& field,
                     const std::string& path, std::string* out);
  // One value of `field` (an element, for a repeated field).
  void Value(const YAML::Node& node, const FieldDescriptor& field,
             const std::string& path, std::string* out);
  // A scalar of `field`'s type; returns false (and records why) if the
  // text does not fit. `as_key`: the JSON must be a string (map keys).
  bool Scalar(const YAML::Node& node, const FieldDescriptor& field,
              const std::string& path, bool as_key, std::string* out);
  bool Integer(const YAML::Node& node, const FieldDescriptor& field,
               const std::string& path, bool as_key, std::string* out);

  std::vector<std::string> errors_;
  std::vector<std::string> dropped_;
};

// What a value that did not fit becomes inside a list, so that the other
// elements keep their indexes: the field type's empty value.
std::string Placeholder(const FieldDescriptor& field) {
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return "\"\"";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "false";
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      const Descriptor& type = *field.message_type();
      const std::string& name = type.full_name();
      if (name == "google.protobuf.Duration") return "\"0s\"";
      if (name == "google.protobuf.Timestamp") {
        return "\"1970-01-01T00:00:00Z\"";
      }
      if (name == "google.protobuf.FieldMask") return "\"\"";
      if (absl::StartsWith(name, "google.protobuf.") &&
          absl::EndsWith(name, "Value") && type.field_count() == 1 &&
          type.field(0)->name() == "value") {
        return Placeholder(*type.field(0));
      }
      return "{}";
    }
    default:
      return "0";  // numbers, and an enum's number 0
  }
}

void Converter::Error(const std::string& path, const YAML::Node& node,
                      absl::string_view reason) {
  std::string line = path.empty() ? "top level" : path;
  const YAML::Mark mark = node.Mark();
  if (mark.line >= 0) absl::StrAppend(&line, " (line ", mark.line + 1, ")");
  absl::StrAppend(&line, ": ", reason);
  errors_.push_back(std::move(line));
}

void Converter::Message(const YAML::Node& node, const Descriptor& descriptor,
                        const std::string& path, std::string* out) {
  if (!node.IsMap()) {
    Error(path, node,
          path.empty()
              ? absl::StrCat("expected a map of ", descriptor.full_name(),
                             " fields, got ", Describe(node))
              : absl::StrCat("expected a map, got ", Describe(node)));
    out->append("null");
    return;
  }
  absl::flat_hash_map<std::string, int> first_line;  // key -> 1-based line
  absl::flat_hash_map<const OneofDescriptor*, const FieldDescriptor*> oneofs;
  // Fields an unknown key was probably meant to be ("matc" -> "match").
  std::vector<std::string> misspelled;
  bool first = true;
  out->push_back('{');
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    const YAML::Node& value = entry.second;
    if (!key.IsScalar()) {
      Error(path, key,
            absl::StrCat("keys must be field names, got ", Describe(key)));
      continue;
    }
    const std::string& name = key.Scalar();
    // A key that is not a plain field name (an unknown one can hold any
    // bytes, newlines too) is quoted and escaped: each error stays one line.
    const std::string part = IsPlainName(name) ? name : Quote(name);
    const std::string child =
        path.empty() ? part : absl::StrCat(path, ".", part);
    const auto [it, inserted] =
        first_line.try_emplace(name, key.Mark().line + 1);
    if (!inserted) {
      Error(child, key,
            absl::StrCat("duplicate key ", Quote(name), " (first at line ",
                         it->second, ")"));
      continue;
    }
    const FieldDescriptor* field = descriptor.FindFieldByName(name);
    if (field == nullptr) {
      const FieldDescriptor* meant = nullptr;
      Error(child, key, UnknownFieldReason(descriptor, name, &meant));
      if (meant != nullptr) misspelled.push_back(meant->name());
      continue;
    }
    if (value.IsNull()) continue;  // `key:` alone leaves the field unset.
    if (const OneofDescriptor* oneof = field->real_containing_oneof()) {
      const auto [set, fresh] = oneofs.try_emplace(oneof, field);
      if (!fresh) {
        Error(path, node,
              absl::StrCat("only one of \"", set->second->name(), "\" or \"",
                           field->name(), "\" may be set (they are ",
                           "alternatives)"));
        continue;
      }
    }
    std::string json;
    if (field->is_map()) {
      MapField(value, *field, child, &json);
    } else if (field->is_repeated()) {
      RepeatedField(value, *field, child, &json);
    } else {
      Value(value, *field, child, &json);
    }
    if (json == "null") {  // did not fit: left unset
      dropped_.push_back(child);
      continue;
    }
    if (!first) out->push_back(',');
    first = false;
    AppendJson(name, out);
    out->push_back(':');
    out->append(json);
  }
  out->push_back('}');
  // A misspelled field's value was written but not read: the field counts
  // as dropped, unless it is set under its right name too.
  for (const std::string& name : misspelled) {
    if (!first_line.contains(name)) {
      dropped_.push_back(path.empty() ? name : absl::StrCat(path, ".", name));
    }
  }
}

void Converter::MapField(const YAML::Node& node, const FieldDescriptor& field,
                         const std::string& path, std::string* out) {
  if (!node.IsMap()) {
    Error(path, node, absl::StrCat("expected a map, got ", Describe(node)));
    out->append("null");
    return;
  }
  const FieldDescriptor& key_field = *field.message_type()->map_key();
  const FieldDescriptor& value_field = *field.message_type()->map_value();
  absl::flat_hash_map<std::string, int> first_line;
  bool first = true;
  out->push_back('{');
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    const std::string child = absl::StrCat(
        path, "[", key.IsScalar() ? Quote(key.Scalar()) : "?", "]");
    if (!key.IsScalar()) {
      Error(path, key, absl::StrCat("expected a map key, got ", Describe(key)));
      continue;
    }
    const auto [it, inserted] =
        first_line.try_emplace(key.Scalar(), key.Mark().line + 1);
    if (!inserted) {
      Error(child, key,
            absl::StrCat("duplicate key ", Quote(key.Scalar()),
                         " (first at line ", it->second, ")"));
      continue;
    }
    std::string json_key;
    if (!Scalar(key, key_field, child, /*as_key=*/true, &json_key)) {
      dropped_.push_back(child);
      continue;
    }
    std::string json_value;
    Value(entry.second, value_field, child, &json_value);
    if (json_value == "null") {
      dropped_.push_back(child);
      continue;
    }
    if (!first) out->push_back(',');
    first = false;
    out->append(json_key);
    out->push_back(':');
    out->append(json_value);
  }
  out->push_back('}');
}

void Converter::RepeatedField(const YAML::Node& node,
                              const FieldDescriptor& field,
                              const std::string& path, std::string* out) {
  if (!node.IsSequence()) {
    Error(path, node,
          absl::StrCat("expected a list (\"- item\" lines or [a, b]), got ",
                       Describe(node)));
    out->append("null");
    return;
  }
  out->push_back('[');
  for (size_t i = 0; i < node.size(); ++i) {
    if (i > 0) out->push_back(',');
    const std::string element = absl::StrCat(path, "[", i, "]");
    std::string json;
    Value(node[i], field, element, &json);
    if (json == "null") {  // did not fit: an empty element keeps the indexes
      dropped_.push_back(element);
      json = Placeholder(field);
    }
    out->append(json);
  }
  out->push_back(']');
}

void Converter::Value(const YAML::Node& node, const FieldDescriptor& field,
                      const std::string& path, std::string* out) {
  if (field.cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
    if (!Scalar(node, field, path, /*as_key=*/false, out)) out->append("null");
    return;
  }
  const Descriptor& type = *field.message_type();
  const std::string& name = type.full_name();
  if (name == "google.protobuf.Duration" ||
      name == "google.protobuf.Timestamp" ||
      name == "google.protobuf.FieldMask") {
    // Their JSON form is a string ("1.5s", RFC 3339, "a.b,c").
    if (!node.IsScalar()) {
      Error(path, node,
            absl::StrCat("expected a string, got ", Describe(node)));
      out->append("null");
      return;
    }
    AppendJson(node.Scalar(), out);
    return;
  }
  if (absl::StartsWith(name, "google.protobuf.") &&
      absl::EndsWith(name, "Value") && type.field_count() == 1 &&
      type.field(0)->name() == "value") {
    // Wrappers (google.protobuf.UInt32Value...): the JSON is the bare value.
    // google.protobuf.Value itself has no "value" field and ends up below.
    if (!Scalar(node, *type.field(0), path, /*as_key=*/false, out)) {
      out->append("null");
    }
    return;
  }
  if (name == "google.protobuf.Struct" || name == "google.protobuf.Value" ||
      name == "google.protobuf.ListValue" || name == "google.protobuf.Any") {
    Error(path, node, absl::StrCat(name, " fields are not supported in YAML"));
    out->append("null");
    return;
  }
  Message(node, type, path, out);
}

bool Converter::Integer(const YAML::Node& node, const FieldDescriptor& field,
                        const std::string& path, bool as_key,
                        std::string* out) {
  const std::string& text = node.Scalar();
  const bool is_signed = field.cpp_type() == FieldDescriptor::CPPTYPE_INT32 ||
                         field.cpp_type() == FieldDescriptor::CPPTYPE_INT64;
  const bool is_64 = field.cpp_type() == FieldDescriptor::CPPTYPE_INT64 ||
                     field.cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
  // Plain decimal only: no sign for unsigned fields, no spaces, no "1e3".
  absl::string_view digits = text;
  if (is_signed && !digits.empty() && digits.front() == '-') {
    digits.remove_prefix(1);
  }
  const bool well_formed =
      !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) {
        return absl::ascii_isdigit(c);
      });
  if (!well_formed) {
    Error(path, node,
          absl::StrCat("expected ", Expected(field), ", got ", Quote(text)));
    return false;
  }
  std::string number;
  bool in_range = true;
  if (is_signed) {
    int64_t value = 0;
    constexpr int64_t kMin32 = std::numeric_limits<int32_t>::min();
    constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
    in_range = absl::SimpleAtoi(text, &value) &&
               (is_64 || (value >= kMin32 && value <= kMax32));
    number = absl::StrCat(value);
  } else {
    uint64_t value = 0;
    in_range = absl::SimpleAtoi(text, &value) &&
               (is_64 || value <= std::numeric_limits<uint32_t>::max());
    number = absl::StrCat(value);
  }
  if (!in_range) {
    Error(path, node,
          absl::StrCat(text, " is out of range for ", field.type_name()));
    return false;
  }
  // 64-bit values travel as JSON strings so no double rounding can occur;
  // the protobuf JSON parser accepts both forms.
  if (as_key || is_64) {
    AppendJson(number, out);
  } else {
    out->append(number);
  }
  return true;
}

bool Converter::Scalar(const YAML::Node& node, const FieldDescriptor& field,
                       const std::string& path, bool as_key, std::string* out) {
  if (!node.IsScalar()) {
    Error(path, node,
          absl::StrCat("expected ", Expected(field), ", got ", Describe(node)));
    return false;
  }
  const std::string& text = node.Scalar();
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (!ValidUtf8(text)) {
        Error(path, node, "not valid UTF-8 text");
        return false;
      }
      AppendJson(text, out);
      return true;
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      return Integer(node, field, path, as_key, out);
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      const std::string lower = absl::AsciiStrToLower(text);
      if (lower == ".inf" || lower == "+.inf") {
        out->append("\"Infinity\"");
        return true;
      }
      if (lower == "-.inf") {
        out->append("\"-Infinity\"");
        return true;
      }
      if (lower == ".nan") {
        out->append("\"NaN\"");
        return true;
      }
      double value = 0;
      if (!absl::SimpleAtod(text, &value) || !std::isfinite(value)) {
        Error(
            path, node,
            absl::StrCat("expected ", Expected(field), ", got ", Quote(text)));
        return false;
      }
      if (as_key) {
        AppendJson(absl::StrCat(value), out);
      } else {
        absl::StrAppendFormat(out, "%.17g", value);
      }
      return true;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      // yaml-cpp's rules: true/false, yes/no, on/off, y/n in any usual case.
      bool value = false;
      if (!YAML::convert<bool>::decode(node, value)) {
        Error(path, node,
              absl::StrCat("expected true or false, got ", Quote(text)));
        return false;
      }
      out->append(as_key ? (value ? "\"true\"" : "\"false\"")
                         : (value ? "true" : "false"));
      return true;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor& type = *field.enum_type();
      if (type.FindValueByName(text) == nullptr) {
        std::vector<std::string> names;
        for (int i = 0; i < type.value_count(); ++i) {
          names.push_back(type.value(i)->name());
        }
        Error(path, node,
              absl::StrCat("unknown value ", Quote(text), " (expected one of ",
                           absl::StrJoin(names, ", "), ")"));
        return false;
      }
      AppendJson(text, out);
      return true;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  Error(path, node, "map keys and scalars cannot be messages");
  return false;
}

absl::Status ErrorsToStatus(const std::vector<std::string>& errors) {
  return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
}

// Converts `yaml` (defined, not null) and keeps every error and every
// dropped path. A YAML exception while walking the tree is returned.
absl::Status Convert(const YAML::Node& yaml, const Descriptor& descriptor,
                     Converter* converter, std::string* json) {
  try {
    converter->Message(yaml, descriptor, "", json);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the YAML document: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> YamlToJson(const YAML::Node& yaml,
                                       const Descriptor& descriptor) {
  if (!yaml.IsDefined() || yaml.IsNull()) return std::string("{}");
  Converter converter;
  std::string json;
  if (absl::Status s = Convert(yaml, descriptor, &converter, &json); !s.ok()) {
    return s;
  }
  if (!converter.errors().empty()) return ErrorsToStatus(converter.errors());
  return json;
}

namespace {

// Records where each document starts; ignores everything else.
class DocumentStarts : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  YAML::Mark start = YAML::Mark::null_mark();
};

// yaml-cpp 0.7 (Debian 12) never returns from LoadAll on some invalid
// input, a lone "," for one, allocating until the process dies
// (jbeder/yaml-cpp#1040, fixed upstream by #1319 in 0.8.0): the parser
// reports an empty document without consuming anything, forever. Found by
// tests/fuzz/config_fuzzer. Walk the documents first with a parser that
// can be stopped: a document that starts where the previous one started
// made no progress. Throws YAML::ParserException like LoadAll would.
void CheckDocumentsProgress(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  int previous = -1;
  while (parser.HandleNextDocument(starts)) {
    if (starts.start.pos == previous) {
      throw YAML::ParserException(starts.start,
                                  "unexpected character at document level");
    }
    previous = starts.start.pos;
  }
}

// The one non-empty document of `yaml_text`, or why there is none.
absl::StatusOr<YAML::Node> OneDocument(std::string_view yaml_text,
                                       const Descriptor& descriptor) {
  std::vector<YAML::Node> documents;
  try {
    CheckDocumentsProgress(std::string(yaml_text));
    documents = YAML::LoadAll(std::string(yaml_text));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid YAML (line ", e.mark.line + 1, ", column ",
                     e.mark.column + 1, "): ", e.msg));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", e.what()));
  }
  // A stray "---" yields an empty document; only non-empty ones count.
  documents.erase(std::remove_if(documents.begin(), documents.end(),
                                 [](const YAML::Node& document) {
                                   return document.IsNull();
                                 }),
                  documents.end());
  if (documents.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the document is empty: expected a map of ",
                     descriptor.full_name(), " fields"));
  }
  if (documents.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected one YAML document, found ", documents.size(),
                     " (separated by \"---\")"));
  }
  return documents.front();
}

// JsonStringToMessage into `message` (cleared first), its error on one line.
absl::Status JsonToMessage(const std::string& json,
                           google::protobuf::Message* message) {
  message->Clear();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status =
      google::protobuf::util::JsonStringToMessage(json, message, options);
  if (!status.ok()) {
    // Not expected after the converter's checks; keep it on one line.
    std::string reason(status.message().data(), status.message().size());
    std::replace(reason.begin(), reason.end(), '\n', ' ');
    return absl::InvalidArgumentError(
        absl::StrCat("cannot convert to ",
                     message->GetDescriptor()->full_name(), ": ", reason));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> YamlTextToJson(std::string_view yaml_text,
                                           const Descriptor& descriptor) {
  absl::StatusOr<YAML::Node> document = OneDocument(yaml_text, descriptor);
  if (!document.ok()) return document.status();
  return YamlToJson(*document, descriptor);
}

absl::Status YamlTextToMessage(std::string_view yaml_text,
                               google::protobuf::Message* message) {
  absl::StatusOr<std::string> json =
      YamlTextToJson(yaml_text, *message->GetDescriptor());
  if (!json.ok()) return json.status();
  return JsonToMessage(*json, message);
}

absl::Status YamlTextToMessagePartial(std::string_view yaml_text,
                                      google::protobuf::Message* message,
                                      SchemaErrors* errors) {
  *errors = SchemaErrors();
  const Descriptor& descriptor = *message->GetDescriptor();
  absl::StatusOr<YAML::Node> document = OneDocument(yaml_text, descriptor);
  if (!document.ok()) return document.status();
  Converter converter;
  std::string json;
  if (absl::Status s = Convert(*document, descriptor, &converter, &json);
      !s.ok()) {
    return s;
  }
  if (json == "null") {
    // The top level is not a map: nothing was read.
    return ErrorsToStatus(converter.errors());
  }
  if (absl::Status s = JsonToMessage(json, message); !s.ok()) {
    // Not expected; without a message, report what the converter found.
    message->Clear();
    return converter.errors().empty() ? s : ErrorsToStatus(converter.errors());
  }
  errors->lines = converter.errors();
  errors->dropped = converter.dropped();
  return absl::OkStatus();
}

}  // namespace sluice
