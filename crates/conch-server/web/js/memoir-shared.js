// What the memoir pages share (docs/memoir-api.md): the languages a teller can be interviewed
// in, the project's own navigation, and saving the plan's chapter list.

import { put } from './api.js';
import { h } from './dom.js';
import { icon } from './icons.js';

/** The teller's languages: the API's tag and the name shown to the family. */
export const LANGUAGES = [
  ['en', 'English'],
  ['zh-Hans', '简体中文 (Simplified Chinese)'],
];

export function languageName(tag) {
  return LANGUAGES.find(([value]) => value === tag)?.[1] ?? tag;
}

export const projectPath = (project, view = '') => `#/memoir/${project.id}${view ? `/${view}` : ''}`;

const VIEWS = [
  ['', 'Overview'],
  ['interview', 'Interview'],
  ['plan', 'Plan'],
  ['chapters', 'Chapters and book'],
];

/** The way back to every memoir and the links between one project's pages. */
export function projectNav(project, current) {
  return [
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/memoir' }, icon('prev'), 'All memoirs')),
    h('nav', { class: 'subnav', 'aria-label': `Memoir of ${project.teller_name}` },
      h('ul', {}, VIEWS.map(([view, label]) => h('li', {},
        h('a', { href: projectPath(project, view), 'aria-current': view === current ? 'page' : null }, label))))),
  ];
}

/** `list` with the item at `from` moved to `to` (a new array; `list` is left alone). */
export function moved(list, from, to) {
  const copy = [...list];
  const [item] = copy.splice(from, 1);
  copy.splice(to, 0, item);
  return copy;
}

/**
 * Saves the plan as `chapters` (in the book's order) and resolves with the updated project.
 * Chapters and questions without an id are new; the server gives them one.
 */
export function savePlan(project, chapters) {
  return put(`/api/memoir/projects/${project.id}/plan`, {
    chapters: chapters.map((chapter) => ({
      ...(chapter.id ? { id: chapter.id } : {}),
      title: chapter.title,
      questions: chapter.questions.map((q) => ({ ...(q.id ? { id: q.id } : {}), text: q.text })),
    })),
  });
}

/**
 * Moves keyboard focus to the first enabled control inside `root` marked `data-key` with one of
 * `keys` (a key or a list of them, best first); false when there is none.
 */
export function refocus(root, keys) {
  for (const key of [keys].flat()) {
    if (!key) continue;
    const target = root.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (target && !target.disabled) {
      target.focus();
      return true;
    }
  }
  return false;
}
