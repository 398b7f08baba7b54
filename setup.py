"""Build hooks: generate the Python protobuf/gRPC modules from proto/ at build time, and
compile the hot path's C kernels (service/echogate/_repetition.c, _corpus.c, _text.c and _explain.c,
plain C against the Python API, no NumPy headers).

Generated code is never committed or edited by hand; it is written next to the
hand-written package (service/echogate/v1/, git-ignored) so that both regular and
editable installs see it.
"""
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


def generate_protos() -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    args = ["protoc", "-Iproto", f"-I{include}", "--python_out=service", "--pyi_out=service",
            "--grpc_python_out=service", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


setup(
    cmdclass={"build_py": BuildPyWithProtos},
    ext_modules=[Extension(f"echogate._{name}", [f"service/echogate/_{name}.c"],
                           libraries=["m"],  # _repetition.c calls log2 and ceil
                           extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"])
                 for name in ("repetition", "corpus", "text", "explain")],
)
