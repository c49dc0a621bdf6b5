"""The Generate page's own theme (Gradio's theme API): a calm tool, indigo on white and slate greys, every text on a
control at least 4.5:1 against what lies behind it (the Default theme's orange behind white text is 2.8:1, its grey
hints 1.9:1). The page's stylesheet only adds what a theme cannot say (the progress overlay, phone target sizes)."""

from __future__ import annotations

import gradio as gr


def theme() -> gr.themes.Base:
    return gr.themes.Default(
        primary_hue=gr.themes.colors.indigo,
        secondary_hue=gr.themes.colors.indigo,
        neutral_hue=gr.themes.colors.slate,
        radius_size=gr.themes.sizes.radius_sm,
    ).set(
        # indigo-700 behind white: 7.9:1; hover one step darker
        button_primary_background_fill="*primary_700",
        button_primary_background_fill_hover="*primary_800",
        button_primary_border_color="*primary_700",
        button_primary_text_color="white",
        button_primary_text_color_hover="white",
        button_secondary_background_fill="*neutral_200",
        button_secondary_background_fill_hover="*neutral_300",
        button_secondary_text_color="*neutral_900",
        # Stop, while there is something to stop: red-700 behind white, 6.5:1
        button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_hover="#991b1b",
        button_cancel_border_color="#b91c1c",
        button_cancel_text_color="white",
        button_cancel_text_color_hover="white",
        color_accent="*primary_700",
        color_accent_soft="*primary_50",
        slider_color="*primary_700",
        checkbox_background_color_selected="*primary_700",
        checkbox_border_color_selected="*primary_700",
        link_text_color="*primary_700",
        link_text_color_hover="*primary_800",
        link_text_color_visited="*primary_800",
        loader_color="*primary_700",
        # greys that still read: slate-600 for hints and labels (7.6:1), slate-500 for placeholders (4.8:1)
        body_text_color_subdued="*neutral_600",
        block_info_text_color="*neutral_600",
        block_label_text_color="*neutral_700",
        block_title_text_color="*neutral_800",
        input_placeholder_color="*neutral_500",
        input_background_fill="white",
        border_color_accent="*primary_600",
        input_border_color_focus="*primary_600",
        # the same in dark mode (the browser's setting): lighter indigo and greys on the dark fill
        button_primary_background_fill_dark="*primary_600",
        button_primary_background_fill_hover_dark="*primary_700",
        button_primary_border_color_dark="*primary_600",
        slider_color_dark="*primary_400",
        checkbox_background_color_selected_dark="*primary_500",
        checkbox_border_color_selected_dark="*primary_500",
        link_text_color_dark="*primary_300",
        link_text_color_hover_dark="*primary_200",
        link_text_color_visited_dark="*primary_300",
        body_text_color_subdued_dark="*neutral_300",
        block_info_text_color_dark="*neutral_300",
        input_placeholder_color_dark="*neutral_400",
    )
