"""wget2: ``--max-threads`` downloads at once (one connection per file, see below)."""

from __future__ import annotations

from benchmarks.peers.base import Invocation, RunContext, Tool


class Wget2(Tool):
    def __init__(self) -> None:
        super().__init__(name="wget2", binary="wget2", apt_package="wget2")

    def command(self, ctx: RunContext) -> Invocation:
        listing = ctx.scratch / "wget2-urls.txt"
        # wget2 cannot name files from an input list: it uses the URL's last path segment,
        # i.e. the object name (<data_id>.<ext>), with the query (signature) cut off. wget2
        # 1.99.1 also keeps the URL's folders when cutting the query, despite
        # --no-directories; the output check finds files by name wherever they are.
        listing.write_text("".join(f"{e.url}\n" for e in ctx.platform.urls), encoding="utf-8")
        # No --chunk-size for the large set: wget2 1.99.1 hangs when it is combined with
        # --cut-file-get-vars, and without the cut it names files "<name>?md5=…&expires=…".
        tuning = ["--max-threads", str(ctx.concurrency)]
        argv = [
            self.resolved() or "wget2",
            "--config=/dev/null",
            "--input-file",
            str(listing),
            "--directory-prefix",
            str(ctx.dest),
            "--no-directories",
            "--cut-file-get-vars",
            "--no-robots",
            "--quiet",
            "--tries",
            "3",
            *tuning,
        ]
        return Invocation(argv, ctx.env(), " ".join(tuning))

    def output_names(self, ctx: RunContext) -> dict[str, str] | None:
        return {e.name: e.object_name.rsplit("/", 1)[-1] for e in ctx.platform.urls}
