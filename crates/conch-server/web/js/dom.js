// Building DOM nodes without markup strings: text always goes in as text, never as HTML.

/**
 * h('button', {class: 'x', onclick: fn, 'aria-label': 'Send'}, child, ...)
 * Attributes named on* with a function value become event listeners; `value`, `checked`,
 * `selected` and `disabled` are set as properties; null, undefined and false are left out.
 * Children may be nodes, strings (as text), arrays of them, or null (skipped).
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (['value', 'checked', 'selected', 'disabled', 'hidden'].includes(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces all of `parent`'s children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

let nextId = 0;
/** A unique id for pairing labels with inputs. */
export function uid(prefix = 'f') {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled form field: the label, the control and an optional hint, wired together. */
export function field(label, control, hint) {
  const id = control.id || uid();
  control.id = id;
  const hintNode = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute('aria-describedby', hintNode.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintNode);
}

/** Says `text` to screen readers through the polite live region. */
export function announce(text) {
  const region = document.getElementById('announcer');
  region.textContent = '';
  // A fresh node after a tick makes screen readers read a repeated message again.
  setTimeout(() => { region.textContent = text; }, 50);
}

/** Shows an error to everyone: a toast on screen and an assertive announcement. */
export function showError(error) {
  const message = error && error.message ? error.message : String(error);
  const region = document.getElementById('alert');
  region.textContent = message;
  // The alert region above speaks the message; the toast is only for the eyes.
  const toast = h('div', { class: 'toast', 'aria-hidden': 'true' }, message);
  document.body.append(toast);
  setTimeout(() => toast.remove(), 6000);
}

/** A modal <dialog>; resolves with the value `build` hands to `close`, or null when dismissed. */
export function modal(title, build) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const dialog = h('dialog', { 'aria-labelledby': titleId, class: 'dialog' });
    let result = null;
    const close = (value) => { result = value; dialog.close(); };
    dialog.addEventListener('close', () => { dialog.remove(); resolve(result); });
    append(dialog, [h('h2', { id: titleId }, title), build(close)]);
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Asks for one line of text; resolves with it, or null when cancelled. */
export function askText(title, label, initial = '') {
  return modal(title, (close) => {
    const input = h('input', { type: 'text', value: initial, required: true, autocomplete: 'off' });
    return h('form', {
      method: 'dialog',
      onsubmit: (event) => { event.preventDefault(); close(input.value.trim() || null); },
    },
    field(label, input),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => close(null) }, 'Cancel'),
      h('button', { type: 'submit' }, 'Save')));
  });
}

/** Asks yes or no; resolves true only on the confirming button. */
export function confirmAction(title, text, confirmLabel) {
  return modal(title, (close) => h('div', {},
    h('p', {}, text),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => close(false), autofocus: true }, 'Cancel'),
      h('button', { type: 'button', class: 'danger', onclick: () => close(true) }, confirmLabel))))
    .then((answer) => answer === true);
}

/** Formats a millisecond timestamp for people. */
export function when(ms) {
  const date = new Date(ms);
  const today = new Date();
  if (date.toDateString() === today.toDateString()) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  return date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' });
}
