// The household page (admin only: members and data exports) and the display settings page.

import { del, get, post } from './api.js';
import { announce, confirmAction, field, h, replace, showError, when } from './dom.js';
import { icon } from './icons.js';
import { TEXT_SIZES, loadSettings, saveSettings } from './settings.js';

const EXPORTS = [
  ['trl-preference', 'TRL preference pairs', 'Chosen and rejected replies, for DPO-style training.'],
  ['trl-kto', 'TRL KTO', 'Single replies marked good or bad.'],
  ['openai-sft', 'OpenAI fine-tuning', 'Kept conversations as chat examples.'],
  ['openai-preference', 'OpenAI preference', 'Preferred and non-preferred replies.'],
];

export async function adminPage(main, app) {
  document.title = 'Household · Conch';
  if (!app.user.is_admin) {
    replace(main, h('div', { class: 'page' }, h('h1', {}, 'Household'), h('p', {}, 'Only the administrator can manage the household.')));
    return;
  }
  const users = await get('/api/users');
  const rows = users.map((user) => h('tr', {},
    h('th', { scope: 'row' }, user.username),
    h('td', {}, user.display_name || ''),
    h('td', {}, user.is_admin ? 'Administrator' : 'Member'),
    h('td', {}, when(user.created_at)),
    h('td', {}, user.id === app.user.id ? h('span', { class: 'meta' }, 'You') : h('button', {
      type: 'button', class: 'danger small',
      onclick: async () => {
        if (!await confirmAction('Remove member?', `${user.username} will no longer be able to sign in.`, 'Remove')) return;
        try {
          await del(`/api/users/${user.id}`);
          announce(`Removed ${user.username}`);
          await adminPage(main, app);
        } catch (error) {
          showError(error);
        }
      },
    }, icon('trash'), 'Remove', h('span', { class: 'visually-hidden' }, ` ${user.username}`)))));

  const username = h('input', { name: 'username', required: true, maxlength: '64', pattern: '[A-Za-z0-9._\\-]+', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
  const displayName = h('input', { name: 'display_name', autocomplete: 'off' });
  const password = h('input', { name: 'password', type: 'password', required: true, minlength: '8', autocomplete: 'new-password' });
  const isAdmin = h('input', { type: 'checkbox', name: 'is_admin' });
  const addForm = h('form', {
    class: 'card',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const body = { username: username.value.trim(), password: password.value, is_admin: isAdmin.checked };
        if (displayName.value.trim()) body.display_name = displayName.value.trim();
        const user = await post('/api/users', body);
        announce(`Added ${user.username}`);
        await adminPage(main, app);
      } catch (error) {
        showError(error);
      }
    },
  },
  h('h2', { id: 'add-title' }, 'Add a member'),
  field('Username', username, 'Letters, digits, dots, dashes and underscores.'),
  field('Display name (optional)', displayName),
  field('Password', password, 'At least 8 characters; tell them to keep it private.'),
  h('div', { class: 'field checkbox' }, isAdmin, h('label', { for: (isAdmin.id = 'new-is-admin') }, 'Administrator too')),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, icon('plus'), 'Add member')));

  replace(main, h('div', { class: 'page' },
    h('h1', {}, 'Household'),
    h('section', { 'aria-labelledby': 'members-title' },
      h('h2', { id: 'members-title' }, 'Members'),
      h('div', { class: 'table-wrap' }, h('table', {},
        h('caption', { class: 'visually-hidden' }, 'Household members'),
        h('thead', {}, h('tr', {}, ['Username', 'Display name', 'Role', 'Joined', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows)))),
    addForm,
    h('section', { 'aria-labelledby': 'export-title' },
      h('h2', { id: 'export-title' }, 'Export feedback data'),
      h('p', {}, 'Everyone’s ratings, edits and kept replies, as JSON Lines for training.'),
      h('ul', { class: 'exports' }, EXPORTS.map(([format, label, about]) => h('li', {},
        h('a', { class: 'button secondary', href: `/api/admin/export?format=${format}`, download: `conch-${format}.jsonl` }, icon('download'), label),
        h('span', { class: 'meta' }, about)))))));
}

export function settingsPage(main) {
  document.title = 'Settings · Conch';
  const settings = loadSettings();
  const sizes = TEXT_SIZES.map((size) => {
    const id = `text-size-${size.value}`;
    return h('div', { class: 'field checkbox' },
      h('input', {
        type: 'radio', name: 'text-size', id, value: size.value, checked: settings.textSize === size.value,
        onchange: () => { settings.textSize = size.value; saveSettings(settings); announce(`Text size ${size.label}`); },
      }),
      h('label', { for: id }, `${size.label} (${size.value}%)`));
  });
  const contrast = h('input', {
    type: 'checkbox', id: 'high-contrast', checked: settings.highContrast,
    onchange: () => { settings.highContrast = contrast.checked; saveSettings(settings); announce(contrast.checked ? 'High contrast on' : 'High contrast off'); },
  });
  replace(main, h('div', { class: 'page narrow' },
    h('h1', {}, 'Settings'),
    h('form', { class: 'card', onsubmit: (event) => event.preventDefault() },
      h('fieldset', {}, h('legend', {}, 'Text size'), sizes),
      h('fieldset', {}, h('legend', {}, 'Contrast'),
        h('div', { class: 'field checkbox' }, contrast, h('label', { for: 'high-contrast' }, 'High contrast (black, white and yellow)'))),
      h('p', { class: 'meta' }, 'These settings are kept in this browser.'))));
}
