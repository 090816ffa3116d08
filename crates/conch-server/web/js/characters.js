// Characters: your own and the household gallery, the editor (with avatar upload), publishing,
// copying, and Character Card V2 import (JSON or PNG) and export.

import { del, get, post, put } from './api.js';
import { announce, confirmAction, field, h, replace, showError } from './dom.js';
import { icon } from './icons.js';

const TEXT_FIELDS = [
  ['description', 'Description', 'Who the character is, as others see them.', 4],
  ['personality', 'Personality', 'A short summary of their temperament.', 2],
  ['scenario', 'Scenario', 'The situation the chat takes place in.', 2],
  ['greeting', 'Greeting', 'The first message of every chat with them.', 3],
  ['system_prompt', 'System prompt', 'Instructions for the model, sent before the chat.', 4],
  ['example_dialogue', 'Example dialogue', 'Sample exchanges that show how they talk.', 5],
];
const MAX_AVATAR = 5 * 1024 * 1024;

function avatar(character, size = 'small') {
  if (!character.has_avatar) {
    return h('span', { class: `avatar ${size} placeholder`, 'aria-hidden': 'true' }, (character.name || '?').slice(0, 1).toUpperCase());
  }
  return h('img', { class: `avatar ${size}`, alt: '', src: `/api/characters/${character.id}/avatar?v=${character.updated_at}` });
}

function cardLinks(character) {
  return [
    h('a', { class: 'button secondary small', href: `/api/characters/${character.id}/card?format=json`, download: `${character.name}.json` },
      icon('download'), 'Export JSON', h('span', { class: 'visually-hidden' }, ` of ${character.name}`)),
    h('a', { class: 'button secondary small', href: `/api/characters/${character.id}/card?format=png`, download: `${character.name}.png` },
      icon('download'), 'Export PNG', h('span', { class: 'visually-hidden' }, ` of ${character.name}`)),
  ];
}

export async function charactersPage(main, app) {
  document.title = 'Characters · Conch';
  const characters = await get('/api/characters');
  const mine = characters.filter((c) => c.owner_id === app.user.id);
  const gallery = characters.filter((c) => c.owner_id !== app.user.id && c.published);

  const importInput = h('input', {
    type: 'file', accept: '.json,.png,application/json,image/png', class: 'visually-hidden', id: 'import-card',
    onchange: async () => {
      const file = importInput.files[0];
      if (!file) return;
      const isPng = file.type === 'image/png' || /\.png$/i.test(file.name);
      try {
        const character = await post('/api/characters/import', file, { headers: { 'Content-Type': isPng ? 'image/png' : 'application/json' } });
        announce(`Imported ${character.name}`);
        app.go(`#/characters/${character.id}`);
      } catch (error) {
        showError(error);
        importInput.value = '';
      }
    },
  });

  const card = (character, own) => h('li', { class: 'character-card' },
    avatar(character),
    h('div', { class: 'body' },
      h('h3', {}, character.name),
      character.description ? h('p', { class: 'description' }, character.description.slice(0, 160)) : null,
      own && character.published ? h('p', { class: 'meta' }, icon('globe'), 'In the household gallery') : null,
      h('div', { class: 'actions' },
        h('a', { class: 'button small', href: `#/chat/new?character=${character.id}` }, icon('chat'), 'Chat', h('span', { class: 'visually-hidden' }, ` with ${character.name}`)),
        own
          ? h('a', { class: 'button secondary small', href: `#/characters/${character.id}` }, icon('edit'), 'Edit', h('span', { class: 'visually-hidden' }, ` ${character.name}`))
          : h('button', {
            type: 'button', class: 'secondary small',
            onclick: async () => {
              try {
                const copy = await post(`/api/characters/${character.id}/copy`);
                announce(`Copied ${character.name} to your characters`);
                app.go(`#/characters/${copy.id}`);
              } catch (error) {
                showError(error);
              }
            },
          }, icon('copy'), 'Copy to mine', h('span', { class: 'visually-hidden' }, `: ${character.name}`)),
        cardLinks(character))));

  replace(main, h('div', { class: 'page' },
    h('h1', {}, 'Characters'),
    h('div', { class: 'actions start' },
      h('a', { class: 'button', href: '#/characters/new' }, icon('plus'), 'New character'),
      importInput,
      h('label', { for: 'import-card', class: 'button secondary file-label' }, icon('upload'), 'Import a card (JSON or PNG)')),
    h('section', { 'aria-labelledby': 'mine-title' },
      h('h2', { id: 'mine-title' }, 'Your characters'),
      mine.length ? h('ul', { class: 'character-grid' }, mine.map((c) => card(c, true))) : h('p', {}, 'None yet. Create one or import a card.')),
    h('section', { 'aria-labelledby': 'gallery-title' },
      h('h2', { id: 'gallery-title' }, 'Household gallery'),
      gallery.length ? h('ul', { class: 'character-grid' }, gallery.map((c) => card(c, false))) : h('p', {}, 'Nobody else has shared a character yet.'))));
}

export async function characterEditor(main, app, id) {
  const character = id === 'new' ? null : await get(`/api/characters/${encodeURIComponent(id)}`);
  const own = !character || character.owner_id === app.user.id;
  document.title = `${character ? character.name : 'New character'} · Conch`;

  const inputs = {
    name: h('input', { name: 'name', required: true, maxlength: '200', value: character?.name ?? '', autocomplete: 'off' }),
    tags: h('input', { name: 'tags', value: (character?.tags ?? []).join(', '), autocomplete: 'off' }),
  };
  for (const [key, , , rows] of TEXT_FIELDS) {
    inputs[key] = h('textarea', { name: key, rows: String(rows), value: character?.[key] ?? '' });
  }
  const preview = h('div', { class: 'avatar-preview' }, character ? avatar(character, 'large') : null);
  const avatarInput = h('input', {
    type: 'file', accept: 'image/png,image/jpeg', name: 'avatar',
    onchange: () => {
      const file = avatarInput.files[0];
      if (!file) return;
      if (file.size > MAX_AVATAR) {
        showError(new Error('The picture is larger than 5 MB.'));
        avatarInput.value = '';
        return;
      }
      const image = h('img', { class: 'avatar large', alt: 'Chosen picture' });
      image.src = URL.createObjectURL(file);
      replace(preview, image);
    },
  });

  const collect = () => {
    const body = { name: inputs.name.value.trim(), tags: inputs.tags.value.split(',').map((t) => t.trim()).filter(Boolean) };
    for (const [key] of TEXT_FIELDS) body[key] = inputs[key].value;
    if (character) {
      body.extensions = character.extensions;
      body.published = character.published;
    }
    return body;
  };

  const save = async (event) => {
    event.preventDefault();
    try {
      const saved = character
        ? await put(`/api/characters/${character.id}`, collect())
        : await post('/api/characters', collect());
      const file = avatarInput.files[0];
      if (file) await put(`/api/characters/${saved.id}/avatar`, file, { headers: { 'Content-Type': file.type || 'image/png' } });
      announce(`Saved ${saved.name}`);
      if (character) await characterEditor(main, app, saved.id);
      else app.go(`#/characters/${saved.id}`);
    } catch (error) {
      showError(error);
    }
  };

  const actions = [];
  if (character) {
    actions.push(h('a', { class: 'button secondary', href: `#/chat/new?character=${character.id}` }, icon('chat'), `Chat with ${character.name}`));
    if (own) {
      actions.push(h('button', {
        type: 'button', class: 'secondary', 'aria-pressed': String(character.published),
        onclick: async () => {
          try {
            await post(`/api/characters/${character.id}/publish`, { published: !character.published });
            announce(character.published ? 'Removed from the gallery' : 'Published to the household gallery');
            await characterEditor(main, app, character.id);
          } catch (error) {
            showError(error);
          }
        },
      }, icon('globe'), 'Share in the household gallery'));
    } else {
      actions.push(h('button', {
        type: 'button', class: 'secondary',
        onclick: async () => {
          try {
            const copy = await post(`/api/characters/${character.id}/copy`);
            app.go(`#/characters/${copy.id}`);
          } catch (error) {
            showError(error);
          }
        },
      }, icon('copy'), 'Copy to mine'));
    }
    actions.push(...cardLinks(character));
    if (own) {
      actions.push(h('button', {
        type: 'button', class: 'danger',
        onclick: async () => {
          if (!await confirmAction('Delete character?', `${character.name} will be deleted. Chats with them stay.`, 'Delete')) return;
          try {
            await del(`/api/characters/${character.id}`);
            announce(`Deleted ${character.name}`);
            app.go('#/characters');
          } catch (error) {
            showError(error);
          }
        },
      }, icon('trash'), 'Delete'));
    }
  }

  const form = h('form', { class: 'character-form', onsubmit: save },
    h('fieldset', { disabled: !own },
      h('legend', { class: 'visually-hidden' }, 'Character'),
      field('Name', inputs.name),
      h('div', { class: 'field' }, preview, field('Picture (PNG or JPEG, up to 5 MB)', avatarInput)),
      TEXT_FIELDS.map(([key, label, hint]) => field(label, inputs[key], hint)),
      field('Tags', inputs.tags, 'Separated by commas.'),
      own ? h('div', { class: 'actions' }, h('button', { type: 'submit' }, character ? 'Save changes' : 'Create character')) : null));

  replace(main, h('div', { class: 'page narrow' },
    h('p', {}, h('a', { href: '#/characters' }, icon('prev'), 'All characters')),
    h('h1', {}, character ? (own ? `Edit ${character.name}` : character.name) : 'New character'),
    actions.length ? h('div', { class: 'actions start' }, actions) : null,
    form));
}
