// A1111's localization in the browser: window.localization (the chosen localizations/*.json,
// put in the page's <head>) maps an English text to its translation; texts, placeholders and
// titles of the page are replaced as they appear.
(function () {
    "use strict";
    const ignoreIds = /^(txt2img|img2img)_(prompt|neg_prompt)$|infotext|_gallery$/;
    const original = new WeakMap();

    function translated(text) {
        const table = window.localization || {};
        if (!text) return undefined;
        const key = text.trim();
        return Object.prototype.hasOwnProperty.call(table, key) ? text.replace(key, table[key]) : undefined;
    }
    function skipped(node) {
        for (let el = node.parentElement; el; el = el.parentElement) {
            if (el.id && ignoreIds.test(el.id)) return true;
            if (el.tagName === "TEXTAREA" || el.tagName === "SCRIPT" || el.tagName === "STYLE") return true;
        }
        return false;
    }
    function processNode(node) {
        if (node.nodeType === Node.TEXT_NODE) {
            if (original.has(node) || skipped(node)) return;
            const t = translated(node.textContent);
            if (t !== undefined) {
                original.set(node, node.textContent);
                node.textContent = t;
            }
            return;
        }
        if (node.nodeType !== Node.ELEMENT_NODE) return;
        for (const attr of ["placeholder", "title"]) {
            const value = node.getAttribute(attr);
            const t = translated(value);
            if (t !== undefined) node.setAttribute(attr, t);
        }
        const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            if (n.nodeType === Node.TEXT_NODE) processNode(n);
            else for (const attr of ["placeholder", "title"]) {
                const t = translated(n.getAttribute(attr));
                if (t !== undefined) n.setAttribute(attr, t);
            }
        }
    }
    window.localizeNode = processNode;
    if (!window.localization || !Object.keys(window.localization).length) return;
    onUiUpdate((mutations) => {
        for (const m of mutations || []) {
            m.addedNodes.forEach(processNode);
            if (m.type === "characterData") processNode(m.target);
        }
    });
    onUiLoaded(() => {
        processNode(gradioApp());
        if (window.localization.rtl) document.documentElement.setAttribute("dir", "rtl");
    });
})();
