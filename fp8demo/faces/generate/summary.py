"""The summary of a form's errors next to its Run button: each field at fault by its label, with its message; a click
opens the section that holds the field and brings the field into view. Each message also stays under its own field
(the event's validator); the summary is for fields out of view (below the fold, in a closed section)."""

from __future__ import annotations

import html

import gradio as gr

# A click on a field's name asks the server to open its section (trigger), then scrolls to the field once it shows
# (the section opens a round trip later) and puts the cursor in it (not in a dropdown, whose list would cover the
# field's message).
SCROLL_TO_FIELD = """
element.addEventListener('click', (event) => {
  const link = event.target.closest('[data-field]');
  if (!link) return;
  trigger('click', {field: link.dataset.field});
  const deadline = Date.now() + 2000;
  const show = () => {
    const field = document.getElementById(link.dataset.field);
    if (field && field.offsetParent !== null) {
      field.scrollIntoView({behavior: 'smooth', block: 'center'});
      const input = field.querySelector('textarea, input[type=number], input[type=text]:not([role=combobox])');
      if (input) input.focus({preventScroll: true});
    } else if (Date.now() < deadline) {
      setTimeout(show, 50);
    }
  };
  show();
});
"""


def summary_box(elem_id: str) -> gr.HTML:
    return gr.HTML("", elem_id=elem_id, elem_classes=["form-errors"], js_on_load=SCROLL_TO_FIELD)


def summary_html(errors: dict[str, str], fields: dict[str, gr.components.Component]) -> str:
    """The errors (by field name) as a list of "Label: message", each label a button to its field; "" when none."""
    if not errors:
        return ""
    items = []
    for name, message in errors.items():
        field = fields.get(name)
        label = html.escape(str(getattr(field, "label", None) or name.replace("_", " ").capitalize()))
        target = getattr(field, "elem_id", None)
        name_html = (f'<button type="button" class="field-link" data-field="{html.escape(target)}">{label}</button>'
                     if target else f"<strong>{label}</strong>")
        items.append(f"<li>{name_html}: {html.escape(message)}</li>")
    count = "1 setting" if len(errors) == 1 else f"{len(errors)} settings"
    return f'<div role="alert"><p>Fix {count} to run:</p><ul>{"".join(items)}</ul></div>'


def wire(triggers: list, box: gr.HTML, fields: dict[str, gr.components.Component], errors_of, section: gr.Accordion,
         in_section: set[str]) -> None:
    """On `triggers` (the ones that run the form), show `errors_of(**values)`'s summary in `box` and open `section`
    when a field at fault is in it; a click on a field's name opens the section too. Light events: they run beside
    the validator, which counts the refusal and puts each message under its field."""

    def summarize(**values):
        errors = errors_of(**values)
        return {box: summary_html(errors, fields),
                section: gr.Accordion(open=True) if in_section & set(errors) else gr.skip()}

    gr.on(triggers, summarize, inputs_kwargs=fields, outputs=[box, section], queue=False, api_visibility="private",
          show_progress="hidden", preprocess=False)

    def open_section(evt: gr.EventData):
        ids = {fields[name].elem_id for name in in_section if name in fields}
        return gr.Accordion(open=True) if getattr(evt, "field", None) in ids else gr.skip()

    box.click(open_section, None, section, queue=False, api_visibility="private", show_progress="hidden")
