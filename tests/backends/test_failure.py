"""A failed job's reason: the last exception's one-line message and where the full log is, from real log tails."""

from __future__ import annotations

from ftlaunch.backends import failure

OOM = """\
step    3/60  loss 2.1
Traceback (most recent call last):
  File "/app/ftlaunch/containers/trainer/run.py", line 40, in main
    return train(spec)
           ^^^^^^^^^^^
  File "/usr/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1751, in _call_impl
    return forward_call(*args, **kwargs)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.3 GiB
[rank0]:[W1128 09:00:00.000] ProcessGroupNCCL.cpp:1250] Warning: destroy_process_group() was not called
"""


def test_a_traceback_gives_its_exception_line():
    reason = failure.reason(failure.clean_lines(OOM), log="/jobs/j/job.log")
    assert reason == ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total "
                      "capacity of 79.3 GiB (full log: /jobs/j/job.log)")


def test_a_chained_traceback_gives_the_last_exception():
    text = ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nKeyError: 'label'\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
            "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n"
            "ValueError: row 7: label is empty\n")
    assert failure.last_error(failure.clean_lines(text)) == "ValueError: row 7: label is empty"


def test_torchruns_wrapper_does_not_hide_the_ranks_error():
    text = OOM + ("E1128 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: 1)\n"
                  "Traceback (most recent call last):\n  File \"/usr/bin/torchrun\", line 8, in <module>\n"
                  "    sys.exit(main())\n"
                  "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
                  "============================================================\n")
    assert failure.last_error(failure.clean_lines(text)).startswith("torch.OutOfMemoryError: CUDA out of memory")


def test_a_user_error_gives_its_own_line_and_first_detail_not_the_fix():
    text = ("loading data\nerror: the dataset has 2 problems\n  data.jsonl:100: not valid JSON\n"
            "  fix: run `ftlaunch validate SPEC`\n")
    assert failure.reason(failure.clean_lines(text), "trainer exited with code 2") == (
        "trainer exited with code 2: the dataset has 2 problems data.jsonl:100: not valid JSON")
    assert failure.last_error(["error: could not read dataset d.jsonl", "  fix: validate it"]) == (
        "could not read dataset d.jsonl")


def test_no_error_gives_the_last_line_after_the_runners_headline():
    lines = failure.clean_lines("\x1b[32mloading shard 3 of 4\x1b[0m\n\n")
    assert failure.reason(lines, "killed by SIGKILL (out of memory?)") == (
        "killed by SIGKILL (out of memory?); last output: loading shard 3 of 4")
    assert failure.reason(lines) == "loading shard 3 of 4"
    assert failure.reason([]) == failure.NOTHING and failure.reason([], "exceeded max_runtime") == (
        "exceeded max_runtime")


def test_a_long_message_is_cut_to_one_bounded_line():
    reason = failure.reason(["Traceback (most recent call last):", "  File \"x\"", "RuntimeError: " + "x" * 2000])
    assert len(reason) == failure.MAX_CHARS and reason.endswith("...") and "\n" not in reason
