"""The great-expectations results page (validation/report/gx.py gx_page/write_gx): self-contained (no
script, nothing fetched), failed expectations first, values escaped; GX's JSON kept beside it."""
import json
import re

from validation import report

RESULTS = [{
    "asset": "probabilities", "rows": 6, "success": False, "suite_name": "classification-probabilities",
    "statistics": {"evaluated_expectations": 2, "successful_expectations": 1},
    "meta": {"great_expectations_version": "1.24.1"},
    "results": [
        {"success": True, "expectation_config": {"type": "expect_column_values_to_not_be_null",
                                                 "kwargs": {"batch_id": "served_outputs-probabilities", "column": "prob"}},
         "result": {"element_count": 6, "unexpected_count": 0, "partial_unexpected_list": []}},
        {"success": False, "expectation_config": {"type": "expect_column_values_to_be_between",
                                                  "kwargs": {"column": "prob", "min_value": 0, "max_value": 1}},
         "result": {"element_count": 6, "unexpected_count": 2,
                    "partial_unexpected_list": [1.5, "<script>alert(1)</script>"]}},
    ]}]


def test_page_lists_failed_first_with_their_numbers_and_no_script_or_outside_resource():
    page = report.gx_page(RESULTS)
    assert "<script" not in page.lower() and not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page)
    assert "url(" not in page and "@import" not in page
    fail, ok = page.index("expect_column_values_to_be_between"), page.index("expect_column_values_to_not_be_null")
    assert fail < ok
    assert "2 of 6 unexpected, e.g. [1.5, &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;]" in page
    assert "column=&quot;prob&quot;, min_value=0, max_value=1" in page and "batch_id" not in page
    assert "1 of 2 expectations hold" in page and "6 rows" in page and "1.24.1" in page


def test_write_gx_keeps_the_raw_results(tmp_path):
    paths = report.write_gx(str(tmp_path / "gx"), RESULTS)
    assert json.loads(open(paths["results"]).read()) == RESULTS
    assert open(paths["index"]).read() == report.gx_page(RESULTS)
    assert sorted(p.name for p in (tmp_path / "gx").iterdir()) == ["index.html", "results.json"]
