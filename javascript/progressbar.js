// Progress of one task as A1111's page shows it, for extensions' scripts that call these names.
// Serena's own tabs follow their job on the server side (modules/ui_progress.py); this file gives
// extensions `requestProgress` over `/internal/progress`, with A1111's argument order.

function rememberGallerySelection() {}

function getGallerySelectedIndex() {}

/** POST `data` as JSON to `url`; `handler(json)` on success, `errorHandler()` otherwise. */
function request(url, data, handler, errorHandler) {
    fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)})
        .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
        .then((json) => handler(json))
        .catch(() => errorHandler());
}

function pad2(x) {
    return x < 10 ? "0" + x : "" + x;
}

/** Seconds → "1:02:03" / "02:03" / "3s". */
function formatTime(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs > 3600) {
        return Math.floor(secs / 3600) + ":" + pad2(Math.floor(secs / 60) % 60) + ":" + pad2(secs % 60);
    }
    if (secs > 60) {
        return Math.floor(secs / 60) + ":" + pad2(secs % 60);
    }
    return secs + "s";
}

var serenaOriginalTitle = null;

function setTitle(progress) {
    if (serenaOriginalTitle === null) serenaOriginalTitle = document.title;
    document.title = progress ? "[" + progress.trim() + "] " + serenaOriginalTitle : serenaOriginalTitle;
}

/** A random id of 15 characters from A-Z and 0-9 (callers wrap it as "task(...)"). */
function randomId() {
    const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let out = "";
    for (let i = 0; i < 15; i++) out += chars[Math.floor(Math.random() * chars.length)];
    return "task(" + out + ")";
}

/**
 * Follow task `id_task`: a progress bar in `progressbarContainer` (percent, ETA, queue position),
 * live previews over `gallery` (when given), `onProgress(response)` after every answer, and
 * `atEnd()` once the task completed or was not seen for `inactivityTimeout` seconds (default 40).
 */
function requestProgress(id_task, progressbarContainer, gallery, atEnd, onProgress, inactivityTimeout = 40) {
    const started = Date.now();
    let lastActive = started;
    let idLivePreview = -1;
    let wasActive = false;
    const period = (typeof opts !== "undefined" && opts.live_preview_refresh_period) || 1000;

    const divProgress = document.createElement("div");
    divProgress.className = "progressDiv";
    const divInner = document.createElement("div");
    divInner.className = "progress";
    divProgress.appendChild(divInner);
    if (progressbarContainer) progressbarContainer.appendChild(divProgress);

    let livePreview = null;
    if (gallery) {
        livePreview = document.createElement("div");
        livePreview.className = "livePreview";
        gallery.insertBefore(livePreview, gallery.firstElementChild);
    }

    const finish = () => {
        setTitle("");
        divProgress.remove();
        if (livePreview) livePreview.remove();
        if (atEnd) atEnd();
    };

    const poll = () => {
        request("./internal/progress", {id_task: id_task, id_live_preview: idLivePreview, live_preview: !!gallery},
            (res) => {
                const now = Date.now();
                if (res.completed || (wasActive && !res.active && !res.queued)) {
                    finish();
                    return;
                }
                let text = "";
                if (res.active) {
                    wasActive = true;
                    lastActive = now;
                    const percent = Math.round((res.progress || 0) * 100);
                    divInner.style.width = percent + "%";
                    text = percent + "%";
                    if (res.eta) text += " ETA: " + formatTime(res.eta);
                } else if (res.queued) {
                    lastActive = now;
                    divInner.style.width = "0%";
                    text = res.textinfo || "Waiting...";
                }
                if (res.textinfo && res.active) text += " " + res.textinfo;
                divInner.textContent = text;
                setTitle(text);
                if (livePreview && res.live_preview) {
                    const img = new Image();
                    img.onload = () => {
                        livePreview.replaceChildren(img);
                    };
                    img.src = res.live_preview;
                    idLivePreview = res.id_live_preview;
                }
                if (onProgress) onProgress(res);
                if (now - lastActive > inactivityTimeout * 1000) {
                    finish();
                    return;
                }
                setTimeout(poll, period);
            },
            finish);
    };
    poll();
}
