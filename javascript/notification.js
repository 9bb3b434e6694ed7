// The notification sound (A1111): when a tab's gallery shows new images after a job, play
// notification.mp3 — the server lists it as `window.serena_notification_url` only when the file
// exists and the option "Play notification sound after image generation" is on — at the volume of
// the option notification_volume (percent).
(function () {
    "use strict";
    const lastShown = {txt2img: null, img2img: null}; // the galleries start empty

    function firstImage(tab) {
        const img = gradioApp().querySelector("#" + tab + "_gallery img");
        return img ? img.getAttribute("src") : null;
    }

    onAfterUiUpdate(function () {
        const url = window.serena_notification_url;
        for (const tab of ["txt2img", "img2img"]) {
            const shown = firstImage(tab);
            const before = lastShown[tab];
            lastShown[tab] = shown;
            if (!url || !shown || shown === before) continue;
            if (opts.notification_audio === false) continue;
            const audio = new Audio(url);
            const volume = Number(opts.notification_volume);
            audio.volume = Number.isFinite(volume) ? Math.min(Math.max(volume / 100, 0), 1) : 1;
            window.serena_notification_played = (window.serena_notification_played || 0) + 1;
            audio.play().catch(() => {}); // browsers may refuse sound before the user interacted
        }
    });
})();
