"""Re-exports Bazel 4's native C++ rules under the rules_cc names.

Debian's bazel-rules-cc targets a newer Bazel and fails to load on 4.2.3.
"""

cc_library = native.cc_library
cc_binary = native.cc_binary
cc_test = native.cc_test
cc_import = native.cc_import
cc_proto_library = native.cc_proto_library
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
