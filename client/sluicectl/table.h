// A plain-text table with aligned columns, for sluicectl's human output.
//
// Owned by whoever renders one table; single-threaded; a value type.
#ifndef SLUICE_CLIENT_SLUICECTL_TABLE_H_
#define SLUICE_CLIENT_SLUICECTL_TABLE_H_

#include <string>
#include <vector>

namespace sluice::sluicectl {

class TextTable {
 public:
  // `header` names the columns; an empty header means a table without a
  // header row (e.g. key/value lists).
  explicit TextTable(std::vector<std::string> header = {});

  // Adds a row; missing cells are empty, extra cells widen the table.
  void AddRow(std::vector<std::string> cells);

  bool empty() const { return rows_.empty(); }

  // Every row on its own line, columns padded to their widest cell and
  // separated by two spaces, no trailing spaces.
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace sluice::sluicectl

#endif  // SLUICE_CLIENT_SLUICECTL_TABLE_H_
