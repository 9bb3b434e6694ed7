// Serena's browser helpers with the names A1111's javascript/ gives extensions:
// gradioApp(), onUiLoaded / onUiUpdate / onAfterUiUpdate / onUiTabChange / onOptionsChanged,
// get_uiCurrentTab(), get_uiCurrentTabContent(), uiElementIsVisible(), uiElementInSight(), opts.
(function () {
    "use strict";

    window.gradioApp = function () {
        const elems = document.getElementsByTagName("gradio-app");
        const app = elems.length ? elems[0] : document;
        return app.shadowRoot ? app.shadowRoot : app;
    };

    const callbacks = {loaded: [], update: [], afterUpdate: [], tabChange: [], optionsChanged: []};
    window.onUiLoaded = (cb) => callbacks.loaded.push(cb);
    window.onUiUpdate = (cb) => callbacks.update.push(cb);
    window.onAfterUiUpdate = (cb) => callbacks.afterUpdate.push(cb);
    window.onUiTabChange = (cb) => callbacks.tabChange.push(cb);
    window.onOptionsChanged = (cb) => callbacks.optionsChanged.push(cb);
    window.onOptionsAvailable = (cb) => (Object.keys(window.opts).length ? cb() : callbacks.optionsChanged.push(cb));

    function run(list, arg) {
        for (const cb of list) {
            try {
                cb(arg);
            } catch (e) {
                console.warn("UI callback failed:", e);
            }
        }
    }
    window.executeCallbacks = run;

    window.opts = Object.assign({}, window.serena_opts || {});
    // Settings code calls this after applying options, so extensions see the new values.
    window.serenaSetOptions = function (values) {
        Object.assign(window.opts, values || {});
        run(callbacks.optionsChanged);
    };

    window.get_uiCurrentTab = function () {
        return gradioApp().querySelector("#tabs > .tab-wrapper button.selected, #tabs > .tab-nav button.selected, "
            + "#tabs button[role=tab][aria-selected=true]");
    };
    window.get_uiCurrentTabContent = function () {
        const panels = gradioApp().querySelectorAll("#tabs > .tabitem, #tabs > div[role=tabpanel]");
        for (const panel of panels) {
            if (panel.offsetParent !== null && getComputedStyle(panel).display !== "none") return panel;
        }
        return null;
    };
    window.uiElementIsVisible = function (el) {
        if (!el || el === document) return true;
        const style = getComputedStyle(el);
        if (style.display === "none" || style.visibility === "hidden") return false;
        return el.parentElement ? uiElementIsVisible(el.parentElement) : true;
    };
    window.uiElementInSight = function (el) {
        const rect = el.getBoundingClientRect();
        return rect.bottom > 0 && rect.top < (window.innerHeight || document.documentElement.clientHeight);
    };
    // The current Gradio tab's name ("txt2img", "img2img", ...).
    window.serenaCurrentTabName = function () {
        const content = get_uiCurrentTabContent();
        return content && content.id ? content.id.replace(/^tab_/, "") : "txt2img";
    };

    let loaded = false;
    let pending = [];
    let afterTimer = null;
    let currentTab = null;
    const observer = new MutationObserver((mutations) => {
        const app = gradioApp();
        if (!loaded && app.querySelector("#txt2img_prompt")) {
            loaded = true;
            run(callbacks.loaded);
        }
        run(callbacks.update, mutations);
        pending = pending.concat(mutations);
        clearTimeout(afterTimer);
        afterTimer = setTimeout(() => {
            run(callbacks.afterUpdate, pending);
            pending = [];
        }, 200);
        const tab = get_uiCurrentTab();
        if (tab && tab !== currentTab) {
            currentTab = tab;
            run(callbacks.tabChange);
        }
    });
    // After "Reload UI" / "Apply and restart UI": the server builds a new app; poll A1111's
    // /internal/ping until it answers with a boot id other than this page's, then reload.
    window.serenaRestartReload = function (bootBefore) {
        const started = Date.now();
        document.body.style.opacity = "0.5";
        const retry = () => (Date.now() - started > 180000 ? location.reload() : setTimeout(poll, 500));
        const poll = () => fetch("./internal/ping", {cache: "no-store", credentials: "same-origin"})
            .then((r) => {
                const boot = r.headers.get("X-Serena-Boot");
                if (r.ok && boot && boot !== bootBefore) location.reload();
                else retry();
            })
            .catch(retry);
        setTimeout(poll, 500);
    };

    // Gradio puts the page's <head> scripts in after the document has loaded: start at once then.
    const observe = () => observer.observe(gradioApp(), {childList: true, subtree: true});
    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", observe);
    } else {
        observe();
    }
})();
