// Creating the first (admin) account, and signing in.

import { get, post } from './api.js';
import { field, h, replace } from './dom.js';

export async function authPage(main, app) {
  const { needs_admin: firstRun } = await get('/api/setup');
  document.title = firstRun ? 'Create the first account · Conch' : 'Sign in · Conch';
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, maxlength: '64', pattern: '[A-Za-z0-9._\\-]+', autocapitalize: 'none', spellcheck: 'false' });
  const displayName = h('input', { name: 'display_name', autocomplete: 'name' });
  const password = h('input', { name: 'password', type: 'password', required: true, minlength: firstRun ? '8' : null, autocomplete: firstRun ? 'new-password' : 'current-password' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit' }, firstRun ? 'Create account' : 'Sign in');
  const form = h('form', { class: 'card auth', onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const body = { username: username.value.trim(), password: password.value };
      if (firstRun && displayName.value.trim()) body.display_name = displayName.value.trim();
      app.signedIn(await post(firstRun ? '/api/auth/signup' : '/api/auth/login', body));
      app.go('#/chat');
    } catch (failure) {
      error.textContent = failure.message;
      submit.disabled = false;
      password.focus();
    }
  } },
  h('h1', {}, firstRun ? 'Welcome to Conch' : 'Sign in'),
  firstRun ? h('p', {}, 'Create the first account. It will be the household’s administrator, who can add the others.') : null,
  field('Username', username, firstRun ? 'Letters, digits, dots, dashes and underscores.' : null),
  firstRun ? field('Display name (optional)', displayName) : null,
  field('Password', password, firstRun ? 'At least 8 characters.' : null),
  error,
  h('div', { class: 'actions' }, submit));
  replace(main, h('div', { class: 'center' }, form));
}
