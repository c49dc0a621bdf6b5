// The kiosk page's script (fp8demo/faces/kiosk/page.py inlines it). Thin on purpose: the server owns the screen's
// state (screen.py) and renders it; the stylesheet shows each state from #kiosk-state. This script
//  - puts the rendered state on #kiosk-state in the order the server changed it (answers may arrive out of order),
//  - forwards every touch to the server, which decides what a touch does in the current state,
//  - drives the on-screen keyboard (simple-keyboard), typing into the prompt as a physical keyboard would,
//  - shows "restarting" while the server does not answer, and reloads the page when it answers again.
(() => {
  const settings = window.KIOSK_SETTINGS || {};
  const $ = (selector) => document.querySelector(selector);
  const press = (selector) => $(selector)?.click();

  // No zoom, no long-press menu, no dragging pictures away
  document.addEventListener('contextmenu', (e) => e.preventDefault());
  document.addEventListener('gesturestart', (e) => e.preventDefault());
  document.addEventListener('dragstart', (e) => e.preventDefault());

  // Every touch goes to the server: a touch on the picture to Screen.tap_picture, on the prompt to Screen.typing
  // (the keyboard comes up, even when the box has kept its focus), any other to Screen.touch
  document.addEventListener('click', (e) => {
    const target = e.target instanceof Element ? e.target : null;
    if (!target || target.closest('.kiosk-hidden')) return;  // the forwarded click itself
    if (target.closest('#kiosk-image img')) press('#kiosk-picture-tap');
    else if (target.closest('#kiosk-prompt, #sentence')) press('#kiosk-prompt-tap');
    else press('#kiosk-touch');
  }, true);

  // ---- the state: "<boot> <change number> <state>" as rendered; an older change never replaces a newer one ----
  let down = false, boot = null, shown = -1;
  function show(state) {
    let element = $('#kiosk-state');
    if (!element) {
      element = document.createElement('div');
      element.id = 'kiosk-state';
      element.hidden = true;
      document.body.appendChild(element);
    }
    element.dataset.state = state;
  }
  function follow() {
    const rendered = $('#kiosk-state-view [data-rendered]');
    if (down || !rendered) return;
    const [server, change, state] = rendered.dataset.rendered.split(' ');
    if (boot !== null && server !== boot) { down = true; location.reload(); return; }  // another server: start afresh
    boot = server;
    if (+change < shown) return;
    shown = +change;
    show(state);
  }
  new MutationObserver(follow).observe(document.documentElement,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['data-rendered']});

  // ---- the server: when it stops answering, say so; when it answers again, start afresh ----
  async function answers() {
    try {
      const reply = await fetch('health/live', {cache: 'no-store', signal: AbortSignal.timeout(2500)});
      return reply.ok;
    } catch {
      return false;
    }
  }
  let misses = 0;  // two in a row: one slow answer from a busy server is no restart
  setInterval(async () => {
    if (await answers()) {
      misses = 0;
      if (down) location.reload();
    } else if (++misses >= 2 && !down) {
      down = true;
      show('restarting');
    }
  }, 2000);

  // ---- the on-screen keyboard ----
  const prompt = () => $('#kiosk-prompt textarea');

  function type(key, keyboard) {
    const box = prompt();
    if (!box) return;
    if (key === '{create}') { press('#create'); return; }
    const layer = keyboard.options.layoutName;
    if (key === '{shift}') { keyboard.setOptions({layoutName: layer === 'shift' ? 'default' : 'shift'}); return; }
    if (key === '{symbols}') { keyboard.setOptions({layoutName: 'symbols'}); return; }
    if (key === '{abc}') { keyboard.setOptions({layoutName: 'default'}); return; }
    const focused = document.activeElement === box;
    let start = focused ? box.selectionStart : box.value.length;
    const end = focused ? box.selectionEnd : box.value.length;
    if (key === '{bksp}') {
      if (start === end && start > 0) start -= 1;
      box.setRangeText('', start, end, 'end');
    } else {
      const text = key === '{space}' ? ' ' : key;
      if (box.value.length - (end - start) + text.length > (settings.maxChars || 300)) return;
      box.setRangeText(text, start, end, 'end');
      if (layer === 'shift') keyboard.setOptions({layoutName: 'default'});  // one capital, as phones do
    }
    box.dispatchEvent(new Event('input', {bubbles: true}));  // Gradio reads the box on input, as for real typing
  }

  function name(keyboard) {  // each key's accessible name: the character it types, or what it does
    const names = settings.names || {};
    for (const button of keyboard.keyboardDOM.querySelectorAll('button.hg-button')) {
      const key = button.dataset.skbtn;
      button.type = 'button';
      if (names[key]) button.setAttribute('aria-label', names[key]);
    }
  }

  window.kioskKeyboard = (element) => {
    const host = element.querySelector('.simple-keyboard');
    if (!settings.keyboard || !host || host.dataset.mounted || !window.SimpleKeyboard) return;
    host.dataset.mounted = 'true';
    const box = prompt();
    if (box) box.setAttribute('inputmode', 'none');  // the screen's keyboard; no system one pops up on a tablet
    const Keyboard = window.SimpleKeyboard.default;
    const keyboard = new Keyboard(host, {
      layout: settings.layout,
      display: settings.display,
      layoutName: 'default',
      theme: 'hg-theme-default kiosk-keys',
      useButtonTag: true,
      preventMouseDownDefault: true,  // the prompt keeps its caret while keys are pressed
      disableButtonHold: true,
      onKeyPress: (key) => type(key, keyboard),
      onRender: (keyboard) => name(keyboard),
    });
  };
  // the keyboard's place is drawn by Gradio after this script runs: mount it as soon as it is there
  const mounting = setInterval(() => {
    const place = $('#kiosk-keyboard');
    if (!settings.keyboard) clearInterval(mounting);
    else if (place && window.SimpleKeyboard) { window.kioskKeyboard(place); clearInterval(mounting); }
  }, 200);
})();
