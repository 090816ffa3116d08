// Memoir mode (docs/memoir-api.md): a book of someone's life written from interviews with them.
// This module is the section's entry (#/memoir/{id}/{view}), the list of projects (one per
// teller), a project's overview and details, and the plan editor: the life chapters and their
// questions, which the family renames, reorders, adds to and skips.

import { del, get, patch, post } from './api.js';
import { announce, askText, confirmAction, field, h, replace, showError } from './dom.js';
import { icon } from './icons.js';
import { chaptersPage } from './memoir-chapters.js';
import { interviewPage } from './memoir-interview.js';
import {
  LANGUAGES, languageName, moved, projectNav, projectPath, refocus, savePlan,
} from './memoir-shared.js';

export async function memoirPage(main, app, id, view) {
  if (!id) {
    await projectsPage(main, app);
    return;
  }
  const project = await get(`/api/memoir/projects/${encodeURIComponent(id)}`);
  switch (view) {
    case '':
      await overviewPage(main, app, project);
      break;
    case 'interview':
      await interviewPage(main, app, project);
      break;
    case 'plan':
      planPage(main, app, project);
      break;
    case 'chapters':
      await chaptersPage(main, app, project);
      break;
    default:
      app.go(projectPath(project));
  }
}

function languageSelect(selected) {
  return h('select', { name: 'language' },
    LANGUAGES.map(([value, label]) => h('option', { value, selected: value === selected }, label)));
}

async function projectsPage(main, app) {
  document.title = 'Memoirs · Conch';
  const projects = await get('/api/memoir/projects');
  const tellerName = h('input', { name: 'teller_name', required: true, maxlength: '100', autocomplete: 'off' });
  const title = h('input', { name: 'title', maxlength: '200', autocomplete: 'off' });
  const language = languageSelect('en');
  const form = h('form', {
    class: 'card',
    onsubmit: async (event) => {
      event.preventDefault();
      const body = { teller_name: tellerName.value.trim(), language: language.value };
      if (title.value.trim()) body.title = title.value.trim();
      try {
        const project = await post('/api/memoir/projects', body);
        announce(`Started the memoir of ${project.teller_name}`);
        app.go(projectPath(project));
      } catch (error) {
        showError(error);
      }
    },
  },
  h('h2', {}, 'Start a new memoir'),
  field('Teller’s name', tellerName, 'How the interviewer and the book call them, such as “Grandma Li”.'),
  field('Language of the interview and the book', language),
  field('Book title (optional)', title, 'The teller’s name if left empty.'),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, icon('plus'), 'Start the memoir')));

  const card = (project) => h('li', { class: 'card project-card' },
    h('h2', {}, h('a', { href: projectPath(project) }, project.title)),
    h('p', { class: 'meta' }, `Told by ${project.teller_name}, in ${languageName(project.language)}`),
    h('div', { class: 'actions start' },
      h('a', { class: 'button', href: projectPath(project, 'interview') }, 'Interview',
        h('span', { class: 'visually-hidden' }, ` ${project.teller_name}`)),
      h('a', { class: 'button secondary', href: projectPath(project, 'plan') }, 'Plan',
        h('span', { class: 'visually-hidden' }, ` of ${project.title}`)),
      h('a', { class: 'button secondary', href: projectPath(project, 'chapters') }, 'Chapters and book',
        h('span', { class: 'visually-hidden' }, ` of ${project.title}`))));

  replace(main, h('div', { class: 'page' },
    h('h1', {}, 'Memoirs'),
    h('p', {}, 'A memoir is the story of someone’s life, written from interviews with them: the ',
      'interviewer asks one question at a time, they answer by talking (or typing), and the ',
      'answers become the chapters of a book you can download.'),
    projects.length
      ? h('ul', { class: 'project-list' }, projects.map(card))
      : h('p', { class: 'meta' }, 'No memoirs yet.'),
    form));
}

async function overviewPage(main, app, project) {
  document.title = `${project.title} · Conch`;
  const { chapters } = await get(`/api/memoir/projects/${project.id}/transcript`);
  const answered = chapters.flatMap((c) => c.turns).filter((t) => t.answered_at !== null);
  const started = chapters.filter((c) => c.turns.some((t) => t.answered_at !== null)).length;

  const title = h('input', { name: 'title', required: true, maxlength: '200', value: project.title, autocomplete: 'off' });
  const tellerName = h('input', { name: 'teller_name', required: true, maxlength: '100', value: project.teller_name, autocomplete: 'off' });
  const language = languageSelect(project.language);
  const details = h('form', {
    class: 'card',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const saved = await patch(`/api/memoir/projects/${project.id}`, {
          title: title.value.trim(), teller_name: tellerName.value.trim(), language: language.value,
        });
        announce('Details saved');
        await overviewPage(main, app, saved);
      } catch (error) {
        showError(error);
      }
    },
  },
  h('h2', {}, 'Details'),
  field('Book title', title),
  field('Teller’s name', tellerName),
  field('Language of the interview and the book', language,
    'Questions already asked stay as they were; new ones use this language.'),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save details')));

  const remove = h('button', {
    type: 'button', class: 'danger',
    onclick: async () => {
      if (!await confirmAction('Delete this memoir?',
        `“${project.title}” will be deleted with its interview, recordings and chapters.`, 'Delete')) return;
      try {
        await del(`/api/memoir/projects/${project.id}`);
        announce(`Deleted ${project.title}`);
        app.go('#/memoir');
      } catch (error) {
        showError(error);
      }
    },
  }, icon('trash'), 'Delete this memoir');

  replace(main, h('div', { class: 'page narrow' },
    projectNav(project, ''),
    h('h1', {}, project.title),
    h('p', { class: 'meta' }, `Told by ${project.teller_name}, in ${languageName(project.language)}`),
    h('section', { class: 'card', 'aria-labelledby': 'progress-title' },
      h('h2', { id: 'progress-title' }, 'The interview'),
      h('p', {}, answered.length
        ? `${answered.length} ${answered.length === 1 ? 'answer' : 'answers'} so far, in ${started} of ${project.plan.chapters.length} chapters.`
        : 'Not started yet.'),
      h('p', { class: 'meta' }, 'Sit with the teller, open the interview and let them answer by talking. ',
        'The interview carries on where it stopped.'),
      h('div', { class: 'actions start' },
        h('a', { class: 'button', href: projectPath(project, 'interview') }, answered.length ? 'Continue the interview' : 'Start the interview'),
        h('a', { class: 'button secondary', href: projectPath(project, 'plan') }, 'Edit the plan'),
        h('a', { class: 'button secondary', href: projectPath(project, 'chapters') }, 'Chapters and book'))),
    details,
    h('div', { class: 'actions start' }, remove)));
}

/** The plan editor. Every change is saved at once, and the page drawn again from the answer. */
function planPage(main, app, project) {
  document.title = `Plan · ${project.title} · Conch`;
  const chapters = project.plan.chapters;
  const closed = new Set(project.closed_chapters);

  const save = async (newChapters, message, focusKeys) => {
    try {
      const saved = await savePlan(project, newChapters);
      announce(message);
      redraw(saved, focusKeys);
    } catch (error) {
      showError(error);
    }
  };
  const redraw = (saved, focusKeys) => {
    planPage(main, app, saved);
    if (!refocus(main, focusKeys)) main.querySelector('h1').focus();
  };
  const withChapter = (index, change) => chapters.map((c, i) => (i === index ? change(c) : c));

  // Focus stays on the pressed button as the item moves; at the end of the list, where that
  // button is disabled, on the other one.
  const moveButtons = (what, index, count, onMove, key) => [
    h('button', {
      'aria-label': `Move up: ${what}`,
      type: 'button', class: 'secondary small', disabled: index === 0, 'data-key': `${key}:up`,
      onclick: () => onMove(index - 1, [`${key}:up`, `${key}:down`]),
    }, 'Move up'),
    h('button', {
      'aria-label': `Move down: ${what}`,
      type: 'button', class: 'secondary small', disabled: index === count - 1, 'data-key': `${key}:down`,
      onclick: () => onMove(index + 1, [`${key}:down`, `${key}:up`]),
    }, 'Move down'),
  ];

  const questionItem = (chapter, chapterIndex, question, index) => {
    const key = `q:${chapter.id}:${question.id}`;
    const setQuestions = (questions) => withChapter(chapterIndex, (c) => ({ ...c, questions }));
    return h('li', {},
      h('span', { class: 'text' }, question.text),
      h('div', { class: 'actions' },
        moveButtons(`question “${question.text}”`, index, chapter.questions.length,
          (to, focusKeys) => save(setQuestions(moved(chapter.questions, index, to)), 'Question moved', focusKeys),
          key),
        h('button', {
          'aria-label': `Change: ${question.text}`,
          type: 'button', class: 'secondary small', 'data-key': `${key}:edit`,
          onclick: async () => {
            const text = await askText('Change the question', 'Question', question.text);
            if (!text) return;
            await save(setQuestions(chapter.questions.map((q) => (q === question ? { ...q, text } : q))),
              'Question changed', `${key}:edit`);
          },
        }, icon('edit'), 'Change'),
        h('button', {
          'aria-label': `Remove: ${question.text}`,
          type: 'button', class: 'danger small',
          onclick: () => save(setQuestions(chapter.questions.filter((q) => q !== question)),
            'Question removed', `add:${chapter.id}`),
        }, icon('trash'), 'Remove')));
  };

  const chapterCard = (chapter, index) => {
    const key = `c:${chapter.id}`;
    const isClosed = closed.has(chapter.id);
    const newQuestion = h('input', { name: 'question', required: true, autocomplete: 'off', 'data-key': `add:${chapter.id}` });
    return h('li', { class: `card plan-chapter${isClosed ? ' skipped' : ''}`, 'data-chapter': chapter.id },
      h('div', { class: 'chapter-head' },
        h('h2', {}, `${index + 1}. ${chapter.title}`),
        isClosed ? h('span', { class: 'badge' }, 'Skipped in the interview') : null),
      h('div', { class: 'actions start' },
        moveButtons(`chapter “${chapter.title}”`, index, chapters.length,
          (to, focusKeys) => save(moved(chapters, index, to), `Moved “${chapter.title}” to place ${to + 1}`, focusKeys),
          key),
        h('button', {
          'aria-label': `Rename: ${chapter.title}`,
          type: 'button', class: 'secondary small', 'data-key': `${key}:rename`,
          onclick: async () => {
            const title = await askText('Rename the chapter', 'Chapter title', chapter.title);
            if (!title) return;
            await save(withChapter(index, (c) => ({ ...c, title })), 'Chapter renamed', `${key}:rename`);
          },
        }, icon('edit'), 'Rename'),
        h('button', {
          'aria-label': `Skip in the interview: ${chapter.title}`,
          type: 'button', class: 'secondary small', 'aria-pressed': String(isClosed), 'data-key': `${key}:skip`,
          onclick: async () => {
            try {
              const saved = await post(`/api/memoir/projects/${project.id}/chapters/${encodeURIComponent(chapter.id)}/close`, { closed: !isClosed });
              announce(isClosed ? `The interview will visit “${chapter.title}” again` : `The interview will skip “${chapter.title}”`);
              redraw(saved, `${key}:skip`);
            } catch (error) {
              showError(error);
            }
          },
        }, 'Skip in the interview'),
        h('button', {
          'aria-label': `Remove: ${chapter.title}`,
          type: 'button', class: 'danger small',
          onclick: async () => {
            if (!await confirmAction('Remove the chapter?',
              `“${chapter.title}” and its questions leave the plan. Answers already given are kept.`, 'Remove')) return;
            await save(chapters.filter((c) => c !== chapter), `Removed “${chapter.title}”`, 'new-chapter');
          },
        }, icon('trash'), 'Remove')),
      h('h3', {}, 'Questions'),
      chapter.questions.length
        ? h('ol', { class: 'question-list' }, chapter.questions.map((q, i) => questionItem(chapter, index, q, i)))
        : h('p', { class: 'meta' }, 'No starter questions: the interviewer will begin with one of its own.'),
      h('form', {
        class: 'inline-form',
        onsubmit: async (event) => {
          event.preventDefault();
          const text = newQuestion.value.trim();
          if (!text) return;
          await save(withChapter(index, (c) => ({ ...c, questions: [...c.questions, { text }] })),
            `Question added to “${chapter.title}”`, `add:${chapter.id}`);
        },
      },
      field(`New question for “${chapter.title}”`, newQuestion),
      h('button', { type: 'submit', class: 'secondary' }, icon('plus'), 'Add question',
        h('span', { class: 'visually-hidden' }, ` to ${chapter.title}`))));
  };

  const newChapter = h('input', { name: 'chapter', required: true, autocomplete: 'off', 'data-key': 'new-chapter' });
  replace(main, h('div', { class: 'page narrow' },
    projectNav(project, 'plan'),
    h('h1', {}, 'Plan'),
    h('p', {}, `The chapters of ${project.teller_name}’s story, in the order of the book. The interview `,
      'asks each chapter’s questions in turn, with follow-up questions of its own in between.'),
    h('ol', { class: 'plan-chapters' }, chapters.map(chapterCard)),
    h('form', {
      class: 'card inline-form',
      onsubmit: async (event) => {
        event.preventDefault();
        const title = newChapter.value.trim();
        if (!title) return;
        await save([...chapters, { title, questions: [] }], `Chapter “${title}” added`, 'new-chapter');
      },
    },
    field('Title of a new chapter', newChapter),
    h('button', { type: 'submit' }, icon('plus'), 'Add chapter'))));
}
