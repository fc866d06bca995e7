"""The workbench on the embedded model (slow): rows kept from the chat train an adapter, `ask --compare`
answers with the base model and that adapter on the same loaded weights, and the adapter's training
rows are found again from a reply."""

from __future__ import annotations

import json

import pytest

from medchat.cli.main import main
from medchat.finetune import data as D
from medchat.finetune.provenance import nearest_rows
from medchat.store import saved_rows


@pytest.mark.slow
def test_kept_rows_train_an_adapter_that_compare_and_provenance_use(embedded_model, capsys):
    for ex in D.load_dataset("sample").examples[:6]:
        saved_rows.save_row(saved_rows.Row(ex.question, ex.reasoning, ex.answer))
    main(["finetune", "--model", "smollm2", "--dataset", str(saved_rows.file_for()), "--eval-rows", "0", "--dry-run"])
    assert "medical-o1 shape, 6 rows" in capsys.readouterr().out
    main(["finetune", "--model", "smollm2", "--dataset", "saved", "--eval-rows", "0", "--max-steps", "1",
          "--name", "kept"])
    assert "adapter kept saved" in capsys.readouterr().out

    main(["ask", "What causes gout?", "--model", "smollm2", "--adapter", "kept", "--compare", "--json",
          "--temperature", "0", "--max-new-tokens", "12"])
    out = json.loads(capsys.readouterr().out)
    assert (out["base"]["adapter"], out["adapter"]["adapter"]) == (None, "kept")
    for side in ("base", "adapter"):
        assert out[side]["model"] == "smollm2" and out[side]["completion_tokens"] > 0

    trained = D.load_dataset("sample").examples[2]
    found = nearest_rows("kept", trained.reasoning, trained.answer)
    assert not found.problem and found.rows_trained == 6
    assert found.matches[0].example.question == trained.question and found.matches[0].overlap == pytest.approx(1.0)
