"""A process that imports zoo once, then forks one child per CLI command it is sent.

Shared by tests/test_crash.py and benchmarks/bench_org.py: a random delay before a SIGKILL
then measures time spent working, not time spent starting Python, so a kill can land
anywhere in a command's work. Protocol on stdin, one JSON object per line:
``{"run": [args...], "log": path}`` answers the child's pid; ``{"wait": pid}`` answers its
wait status.
"""

LAUNCHER = """
import json, os, sys
import torch, zoo.api.catalog, zoo.api.learngenes, zoo.api.materialize, zoo.transforms
from zoo_cli.main import main
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if "run" in req:
        pid = os.fork()
        if pid == 0:
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = 0
            try:
                main(req["run"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print(pid, flush=True)
    else:
        print(os.waitpid(req["wait"], 0)[1], flush=True)
"""
