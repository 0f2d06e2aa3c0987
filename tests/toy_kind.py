"""A toy run kind, registered through the registry alone ($SYNTHGAP_KINDS=toy_kind):
tests/test_registry.py shows that adding a kind needs this module and its runner
(tests/toy_runner.py) and no edit anywhere else."""

from runners import protocol
from runners.kinds import Chart, Field, Kind, Metric, Ref

KIND = Kind(
    name="toy",
    runner="toy_runner",
    help="write a few words, after the words of another toy run",
    fields={
        "words": Field(int, 3, "how many words to write", min=1, max=100),
        "word": Field(str, "toy", "the word"),
        "after": Field(str, help="a run whose text comes first",
                       ref=Ref(to="after_path", split=None, artifact="text", path="file")),
    },
    artifacts={"text": "a text file (out.txt)"},
    metrics=(Metric("words", "Words", 0),),
    charts=(Chart("words written", protocol.PROGRESS, "done", (("done", "words"),)),),
    check=lambda p: [("word", "must not contain spaces")] if " " in p.get("word", "") else [],
)
