"""helpers.foundation.progress: a bar whose final state stays in an executed notebook's outputs."""
import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from helpers.foundation.progress import progress_bar

LOOP = """from helpers.foundation.progress import progress_bar
total = 0
for step in progress_bar(range(157), desc="epoch 1/10"):
    total += step
bar = progress_bar(range(3), desc="hidden", disable=True)
print(total, list(bar))"""


@pytest.mark.slow
def test_executed_notebook_stores_the_final_state_of_the_bar():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LOOP)])
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    bars = [o for o in outputs if o.output_type == "display_data"]
    assert len(bars) == 1                                  # one display, updated in place; none when disabled
    assert bars[0].data["text/plain"].startswith("epoch 1/10: 100%|##########| 157/157")
    assert '<progress value="157" max="157"' in bars[0].data["text/html"]
    assert [o.text for o in outputs if o.output_type == "stream"] == ["12246 [0, 1, 2]\n"]
    page, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)
    assert "157/157" in page and "0/157" not in page


def test_outside_a_kernel_it_is_a_text_bar_on_stderr(capsys):
    assert sum(progress_bar(range(5), desc="epoch 2/2")) == 10
    assert "epoch 2/2: 100%" in capsys.readouterr().err
    assert list(progress_bar(range(2), desc="quiet", disable=True)) == [0, 1]
    assert capsys.readouterr().err == ""
