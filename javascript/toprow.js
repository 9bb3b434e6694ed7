// The generation tabs' top row in the browser: A1111's keyboard shortcuts (Ctrl+Enter or
// Alt+Enter generates, Esc interrupts) and "Generate forever" / "Cancel generate forever" on
// the Generate button's right-click menu.
(function () {
    "use strict";
    const TABS = ["txt2img", "img2img"];

    function button(tab, what) {
        return gradioApp().querySelector(`#${tab}_${what}`);
    }
    function activeTab() {
        for (const tab of TABS) {
            const generate = button(tab, "generate");
            if (generate && uiElementIsVisible(generate)) return tab;
        }
        return null;
    }

    document.addEventListener("keydown", (e) => {
        const tab = activeTab();
        if (!tab) return;
        const target = e.composedPath ? e.composedPath()[0] : e.target;
        const inPrompt = target && target.closest && target.closest(`#${tab}_prompt, #${tab}_neg_prompt`);
        if (inPrompt && e.key === "Enter" && (e.ctrlKey || e.metaKey || e.altKey)) {
            e.preventDefault();
            const generate = button(tab, "generate");
            // let Gradio see the last keystroke's value before the click
            setTimeout(() => generate && generate.click(), 0);
        } else if (e.key === "Escape") {
            const interrupt = button(tab, "interrupt");
            if (interrupt) interrupt.click();
        }
    });

    // Hover hints for the top row's symbol buttons (A1111 keeps these in hints.js).
    const HINTS = {
        paste: "Read generation parameters from prompt or last generation if prompt is empty into user interface.",
        clear_prompt: "Clear prompt",
        style_apply: "Apply all selected styles to prompts",
        styles_edit_button: "Edit styles",
        generate: "Generate (Ctrl+Enter); right-click for Generate forever",
        interrupt: "Stop processing images and return any results accumulated so far (Esc)",
        skip: "Stop processing current image and continue processing",
    };
    onUiLoaded(() => {
        for (const tab of TABS) {
            for (const [what, hint] of Object.entries(HINTS)) {
                const el = button(tab, what);
                if (el && !el.title) el.title = hint;
            }
        }
    });

    // --- generate forever ----------------------------------------------------------------------------
    const forever = {};
    // A job is running while the tab's progress line shows a bar (queue position, then steps) or
    // Gradio's status tracker over the gallery is busy.
    function busy(tab) {
        const app = gradioApp();
        const progress = app.querySelector(`#${tab}_progress`);
        const gallery = app.querySelector(`#${tab}_gallery`);
        return !!((progress && progress.querySelector(".serena-progress"))
            || (gallery && gallery.querySelector(".generating, .eta-bar, .progress-text, .progress-bar")));
    }
    function startForever(tab) {
        stopForever(tab);
        let idleSince = 0;
        button(tab, "generate").click();
        forever[tab] = setInterval(() => {
            if (busy(tab)) {
                idleSince = 0;
            } else if (!idleSince) {
                idleSince = Date.now();
            } else if (Date.now() - idleSince > 1500) {
                idleSince = 0;
                button(tab, "generate").click();
            }
        }, 250);
    }
    function stopForever(tab) {
        if (forever[tab]) clearInterval(forever[tab]);
        delete forever[tab];
    }
    window.serenaGenerateForever = {start: startForever, stop: stopForever, running: (tab) => !!forever[tab]};

    let menu = null;
    function hideMenu() {
        if (menu) menu.remove();
        menu = null;
    }
    function showMenu(tab, x, y) {
        hideMenu();
        menu = document.createElement("nav");
        menu.id = "context-menu";
        menu.className = "context-menu serena-context-menu";
        const items = forever[tab]
            ? [["Cancel generate forever", () => stopForever(tab)]]
            : [["Generate forever", () => startForever(tab)]];
        const list = document.createElement("ul");
        for (const [label, action] of items) {
            const item = document.createElement("li");
            item.textContent = label;
            item.addEventListener("click", () => {
                hideMenu();
                action();
            });
            list.appendChild(item);
        }
        menu.appendChild(list);
        menu.style.left = `${x}px`;
        menu.style.top = `${y}px`;
        document.body.appendChild(menu);
    }
    document.addEventListener("contextmenu", (e) => {
        for (const tab of TABS) {
            const generate = button(tab, "generate");
            if (generate && generate.contains(e.target)) {
                e.preventDefault();
                showMenu(tab, e.pageX, e.pageY);
                return;
            }
        }
    });
    document.addEventListener("click", (e) => {
        if (menu && !menu.contains(e.target)) hideMenu();
    });
})();
