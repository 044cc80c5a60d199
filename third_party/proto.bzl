"""Compiles .proto files with Debian's /usr/bin/protoc and grpc_cpp_plugin.

sluice_cc_proto(name, srcs, deps, grpc, root) generates <file>.pb.{h,cc}
(and .grpc.pb.{h,cc} when grpc = True) into the package's output folder and
wraps them in a cc_library named `name`. Imports resolve against the
package folder, /usr/include (google/protobuf/*.proto) and
/usr/share/grpc-proto (grpc/...). `root`, when set, is an absolute folder
holding `srcs` (for Debian-shipped .proto files).
"""

def sluice_cc_proto(name, srcs, deps = [], grpc = False, root = None):
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]

    pkg = native.package_name()
    dep_srcs = [d + "_srcs" for d in deps]
    if root:
        inputs = []
        files = " ".join([root + "/" + s for s in srcs])
    else:
        inputs = srcs
        files = " ".join([pkg + "/" + s for s in srcs])

    cmd = "/usr/bin/protoc "
    if not root:
        cmd += "-I" + pkg + " "
    cmd += "-I/usr/include -I/usr/share/grpc-proto --cpp_out=$(RULEDIR)"
    if grpc:
        cmd += (" --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin" +
                " --grpc_out=$(RULEDIR)")
    cmd += " " + files

    native.filegroup(name = name + "_srcs", srcs = inputs + dep_srcs)
    native.genrule(
        name = name + "_gen",
        srcs = inputs + dep_srcs,
        outs = outs,
        cmd = cmd,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        copts = ["-Wno-unused-parameter"],
        deps = deps + ["//third_party:protobuf"] + (["//third_party:grpc++"] if grpc else []),
        visibility = ["//visibility:public"],
    )
