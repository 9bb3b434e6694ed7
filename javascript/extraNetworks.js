// The extra-networks panel's browser helpers, with the names A1111's extraNetworks.js gives
// extensions. The panel itself works without this file (card clicks reach the server through the
// cards component); these functions let extensions' scripts do what A1111's page lets them do:
// put a card's text in a prompt box, toggle it, and show an item's metadata in a popup.
(function () {
    "use strict";

    function app() {
        return typeof window.gradioApp === "function" ? window.gradioApp() : document;
    }

    // Tell Gradio a textbox changed (A1111's updateInput).
    function changed(target) {
        target.dispatchEvent(new Event("input", {bubbles: true}));
    }

    function escapeRegex(text) {
        return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }

    // A pattern for `text` in a prompt; "<kind:name:w>" matches that network at any weight.
    function tagPattern(text) {
        const m = text.trim().match(/^<([^:<>]+):([^:<>]+)(?::[^<>]*)?>([\s\S]*)$/);
        if (m) {
            const rest = m[3].trim();
            const tail = rest ? "(?:\\s*" + escapeRegex(rest) + ")?" : "";
            return new RegExp("<" + escapeRegex(m[1]) + ":" + escapeRegex(m[2]) + "(?::[^<>]*)?>" + tail);
        }
        return new RegExp("(^|[^\\w])" + escapeRegex(text.trim()) + "(?![\\w])");
    }

    // Remove `text` from the textarea when present; true if it was.
    window.tryToRemoveExtraNetworkFromPrompt = function (textarea, text) {
        const found = textarea.value.match(tagPattern(text));
        if (!found) return false;
        const start = found.index + (found[1] || "").length;
        const before = textarea.value.slice(0, start).replace(/[\s,]*$/, "");
        const after = textarea.value.slice(found.index + found[0].length).replace(/^[\s,]*/, "");
        textarea.value = before && after ? before + " " + after : before + after;
        return true;
    };

    // Toggle `text` in the textarea: removed when present, else appended (A1111's card click).
    window.updatePromptArea = function (text, textarea) {
        if (!window.tryToRemoveExtraNetworkFromPrompt(textarea, text)) {
            const sep = (window.opts && window.opts.extra_networks_add_text_separator) || " ";
            textarea.value = textarea.value.trim() ? textarea.value + sep + text : text;
        }
        changed(textarea);
    };

    // A1111: cardClicked(tabname, textToAdd, textToAddNegative, allowNegativePrompt).
    window.cardClicked = function (tabname, textToAdd, textToAddNegative, allowNegativePrompt) {
        const prompt = app().querySelector("#" + tabname + "_prompt textarea");
        const negative = app().querySelector("#" + tabname + "_neg_prompt textarea");
        if (textToAddNegative && negative) {
            window.updatePromptArea(textToAdd, prompt);
            window.updatePromptArea(textToAddNegative, negative);
        } else if (prompt) {
            window.updatePromptArea(textToAdd, prompt);
        }
    };

    let popupBox = null;

    // Show `contents` (a node) in a modal box; a click outside it or Escape closes it.
    window.popup = function (contents) {
        if (!popupBox) {
            popupBox = document.createElement("div");
            popupBox.className = "global-popup";
            popupBox.style.cssText = "position:fixed;inset:0;z-index:1001;background:rgba(0,0,0,0.6);" +
                "display:flex;align-items:center;justify-content:center;";
            popupBox.addEventListener("click", (e) => {
                if (e.target === popupBox) popupBox.style.display = "none";
            });
            document.addEventListener("keydown", (e) => {
                if (e.key === "Escape" && popupBox) popupBox.style.display = "none";
            });
            document.body.appendChild(popupBox);
        }
        popupBox.replaceChildren(contents);
        popupBox.style.display = "flex";
    };

    window.extraNetworksShowMetadata = function (text) {
        const pre = document.createElement("pre");
        pre.style.cssText = "max-width:80vw;max-height:80vh;overflow:auto;padding:1em;" +
            "background:var(--block-background-fill, #222);color:var(--body-text-color, #eee);";
        pre.textContent = text;
        window.popup(pre);
    };

    // A1111: requestGet(url, data, handler, errorHandler) — GET with query data, JSON answer.
    window.requestGet = function (url, data, handler, errorHandler) {
        const query = new URLSearchParams(data || {}).toString();
        fetch(url + (query ? "?" + query : ""), {credentials: "same-origin"})
            .then((r) => (r.ok ? r.json() : Promise.reject(new Error(r.status + " " + r.statusText))))
            .then(handler)
            .catch((e) => (errorHandler ? errorHandler(e) : console.warn("request failed:", url, e)));
    };

    // Show the metadata of item `cardName` of page `extraPage` (the server's /sd_extra_networks/metadata).
    window.extraNetworksRequestMetadata = function (event, extraPage, cardName) {
        if (event) event.stopPropagation();
        window.requestGet("./sd_extra_networks/metadata", {page: extraPage, item: cardName}, (data) => {
            window.extraNetworksShowMetadata(data && data.metadata ? data.metadata : "No metadata for " + cardName);
        });
    };
})();
