// The app's entry: finds out who is signed in, draws the navigation and shows the page the
// address (#/…) names.

import { get, post, setCsrfToken, whenSignedOut } from './api.js';
import { h, replace, showError } from './dom.js';
import { icon } from './icons.js';
import { applySettings, loadSettings } from './settings.js';
import { authPage } from './auth.js';
import { chatPage } from './chat.js';
import { charactersPage, characterEditor } from './characters.js';
import { adminPage, settingsPage } from './admin.js';
import { memoirPage } from './memoir.js';

const app = {
  user: null,
  /** Called to end the current page (stop a stream, drop listeners) before another is drawn. */
  leave: null,
  signedIn(session) {
    app.user = session.user;
    setCsrfToken(session.csrf_token);
    drawNav();
  },
  signedOut() {
    app.user = null;
    setCsrfToken(null);
    drawNav();
  },
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
};

function drawNav() {
  const bar = document.getElementById('topbar');
  bar.hidden = !app.user;
  if (!app.user) return;
  const current = location.hash.split('/')[1] || 'chat';
  const link = (name, label, iconName) => h('li', {},
    h('a', { href: `#/${name}`, 'aria-current': current === name ? 'page' : null }, icon(iconName), h('span', {}, label)));
  replace(document.getElementById('nav-links'),
    link('chat', 'Chats', 'chat'),
    link('characters', 'Characters', 'people'),
    link('memoir', 'Memoirs', 'edit'),
    app.user.is_admin ? link('admin', 'Household', 'admin') : null,
    link('settings', 'Settings', 'settings'),
    h('li', {}, h('button', { type: 'button', class: 'link-button', onclick: signOut },
      icon('logout'), h('span', {}, `Sign out ${app.user.display_name || app.user.username}`))));
}

async function signOut() {
  try {
    await post('/api/auth/logout');
  } catch (error) {
    showError(error);
  }
  app.signedOut();
  app.go('#/login');
}

/** The page for the current address, drawn into <main>. */
async function route() {
  if (app.leave) {
    app.leave();
    app.leave = null;
  }
  const [, section = '', id = '', view = ''] = location.hash.replace(/\?.*$/, '').split('/');
  const query = new URLSearchParams(location.hash.split('?')[1] || '');
  const main = document.getElementById('main');
  drawNav();
  if (!app.user && section !== 'login') {
    app.go('#/login');
    return;
  }
  try {
    switch (section) {
      case 'login':
        if (app.user) return app.go('#/chat');
        await authPage(main, app);
        break;
      case 'characters':
        if (id) await characterEditor(main, app, id);
        else await charactersPage(main, app);
        break;
      case 'memoir':
        await memoirPage(main, app, id, view);
        break;
      case 'admin':
        await adminPage(main, app);
        break;
      case 'settings':
        settingsPage(main, app);
        break;
      case 'chat':
        await chatPage(main, app, id, query);
        break;
      default:
        return app.go('#/chat');
    }
  } catch (error) {
    if (error.status === 401) return;
    replace(main, h('h1', { tabindex: '-1' }, 'Something went wrong'), h('p', {}, error.message));
  }
  const heading = main.querySelector('h1');
  if (heading && !main.contains(document.activeElement)) {
    heading.setAttribute('tabindex', '-1');
    heading.focus();
  }
}

async function start() {
  applySettings(loadSettings());
  try {
    app.signedIn(await get('/api/me'));
  } catch (error) {
    if (error.status !== 401) showError(error);
  }
  whenSignedOut(() => {
    app.signedOut();
    app.go('#/login');
  });
  window.addEventListener('hashchange', route);
  await route();
}

start();
