"""Engineer-facing upload errors in a real browser, in Japanese at 1280×720 (docs/WORKBENCH.md): the uploader's
button in Japanese, a dataset zip
given as the model is called a dataset, the weights form starts on the architecture the file's keys
match, and weights given the wrong architecture get a short summary naming the one they match."""

from __future__ import annotations

from core.app.i18n import translator
from core.app.store import Store
from tests.e2e.conftest import ARTIFACTS, settle, sign_in
from tests.e2e.test_browser import _upload
from tests.optional import need
from tests.wb_helpers import zip_folder_bytes

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)
from playwright.sync_api import expect  # noqa: E402


def test_dataset_as_model_and_weights_of_another_architecture_in_japanese(server, browser, demo_dir, tmp_path):
    t = translator("ja")
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server.url + "/?lang=ja")
    sign_in(pg, "alice")  # uploading needs a curator's account (a demo session may not upload)
    pg.get_by_text(t("model_upload_header")).first.wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # Streamlit's uploader button says "Upload", in English only: here it reads in the page's language.
    button = pg.locator(".st-key-up_bundle [data-testid=stFileUploaderDropzone] button p").first
    button.wait_for()
    shown = button.evaluate("p => [getComputedStyle(p).fontSize, getComputedStyle(p, '::after').content]")
    assert shown == ["0px", '"アップロード"'], shown
    assert button.evaluate("p => p.getBoundingClientRect().width") > 40  # the word takes its room: not hidden
    pg.locator(".st-key-up_bundle").scroll_into_view_if_needed()
    pg.screenshot(path=str(ARTIFACTS / "upload_button_ja.png"))

    # The demo's whole evaluation set (7,000 images) uploaded as the model.
    eval_zip = tmp_path / "eval.zip"
    eval_zip.write_bytes(zip_folder_bytes(demo_dir / "eval"))
    _upload(pg, "up_bundle", eval_zip, t("model_load_bundle"))
    alert = pg.locator("[data-testid=stAlert]", has_text="eval.zip はモデルではなくデータセット")
    alert.wait_for()
    settle(pg)
    assert "上限" not in alert.inner_text()  # not the 64-entry limit of a bundle
    alert.scroll_into_view_if_needed()
    pg.screenshot(path=str(ARTIFACTS / "upload_dataset_as_model_ja.png"))

    # The demo's small_cnn weights as a bare weights file: the form starts on small_cnn.
    pg.get_by_role("tab", name=t("model_tab_weights")).click()
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes((demo_dir / "model" / "model.safetensors").read_bytes())
    pg.locator(".st-key-up_weights input[type=file]").set_input_files(str(weights))
    settle(pg)
    arch = pg.locator(".st-key-w_arch input")
    expect(arch).to_have_value("small_cnn")
    assert pg.get_by_text("small_cnn に合う").is_visible()  # and the page says why

    # Told it is a resnet18 instead: a summary that names small_cnn, not a wall of keys.
    arch.click()
    pg.keyboard.type("resnet18")
    pg.keyboard.press("Enter")
    expect(arch).to_have_value("resnet18")
    pg.locator(".st-key-w_classes textarea").fill("zero, one, two, three, four, five, six, seven, eight, nine")
    pg.locator(".st-key-w_size input").fill("3 28 28")
    pg.get_by_role("button", name=t("model_load_weights")).click()
    error = pg.locator("[data-testid=stAlert]", has_text="small_cnn を選んでください")
    error.wait_for(timeout=120_000)
    settle(pg)
    text = error.inner_text()
    assert "resnet18" in text and len(text) < 500, text
    error.scroll_into_view_if_needed()
    pg.screenshot(path=str(ARTIFACTS / "upload_wrong_architecture_ja.png"))
    assert Store(server.home).projects() == []
    ctx.close()
