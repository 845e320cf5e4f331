// Progressive enhancement only: every page works without this script.
// It reveals the copy buttons next to one-time secrets and copies on click.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        // Without clipboard access the selected text can still be copied by hand.
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }
});
