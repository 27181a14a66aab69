"""The command line: a thin layer over the Python API, one module per command group
(``build``; ``stages``: probe, select, prune, recover, export, quantize, prune-seq2seq; ``bundle``: bench,
predict, verify, sign; ``devices``: profile, latency-table, hardware; ``cache``). Heavy libraries are
imported inside each command, so ``probscale-edge --help`` is instant. Bad input exits with status 2 and
one line naming the fix; SIGINT and SIGTERM leave nothing half-written."""

from __future__ import annotations

import os
import signal
import sys

import click

from probscale_edge import __version__
from probscale_edge.errors import ProbscaleError


def fail(err: ProbscaleError):
    click.echo(f"error: {err.line()}", err=True)
    sys.exit(2)


def _sigterm(signum, frame):  # what `timeout`, CI and container runtimes send: clean up as for Ctrl-C
    raise KeyboardInterrupt


def _exit_now(code: int):
    """Exit with ``code`` now. ``sys.exit`` is not enough after an interrupt: when the KeyboardInterrupt was
    raised inside an extension's embedded ``PyRun_*`` call (pybind11 in torch and onnxruntime), CPython can
    flag it as unhandled and, after a clean SystemExit, kill the process with SIGINT (CI saw status -2). The
    staging folders are already removed by then, so nothing is left to clean up."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Group(click.Group):
    def invoke(self, ctx):
        from probscale_edge.cli.errors import os_error, is_disk_full

        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _sigterm)
        try:
            return super().invoke(ctx)
        except ProbscaleError as e:
            fail(e)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written (partial outputs are removed)", err=True)
            _exit_now(130)
        except OSError as e:
            fail(os_error(e))
        except Exception as e:  # noqa: BLE001 - libraries (safetensors, onnx) wrap a full disk in their own errors
            if not is_disk_full(e):
                raise
            fail(ProbscaleError("No space left on device while writing; nothing was kept",
                                "free disk space or pass another --output / PROBSCALE_EDGE_CACHE location"))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probscale-edge")
def main():
    """probscale-edge: find the subnetwork a task needs, cut it out, and ship it to phones and CPUs.

    \b
    Pipeline: probe -> select -> prune -> recover -> export -> quantize -> bundle -> bench
    Main command:  probscale-edge build --target arm64
    """


from probscale_edge.cli import build, bundle, cache, devices, stages  # noqa: E402,F401  (registers the commands)

if __name__ == "__main__":
    main()
