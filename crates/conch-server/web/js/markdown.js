// A small Markdown renderer for model output that cannot inject markup: it builds DOM nodes and
// puts every piece of the text in as a text node, so `<script>` or `<img onerror>` in a reply
// shows as those characters. Links become <a> only for absolute http(s) URLs.
//
// Blocks: paragraphs (single newlines kept as line breaks), # headings, fenced and indented
// code, > quotes, - / 1. lists (nested by indentation), --- rules, | tables |.
// Inline: `code`, **bold**, *italic*, ~~strike~~, [links](https://…), bare https:// URLs, \escapes.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(\s+|$)/;
const INDENTED_CODE = /^(?: {4}|\t)/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

/** `text` as a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  for (const node of blocks(String(text).replace(/\r\n?/g, '\n').split('\n'))) fragment.append(node);
  return fragment;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (!line.trim()) {
      i += 1;
    } else if ((match = FENCE.exec(line))) {
      const fence = match[1];
      const body = [];
      i += 1;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end, while a reply is still streaming)
      out.push(codeBlock(body.join('\n'), match[2]));
    } else if ((match = HEADING.exec(line))) {
      // Replies sit inside the page's own outline, so their headings start below it.
      const level = Math.min(6, match[1].length + 2);
      out.push(element(`h${level}`, inline(match[2] || '')));
      i += 1;
    } else if (RULE.test(line)) {
      out.push(document.createElement('hr'));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        body.push(lines[i].replace(QUOTE, ''));
        i += 1;
      }
      out.push(element('blockquote', blocks(body)));
    } else if (ITEM.test(line)) {
      i = list(lines, i, out);
    } else if (INDENTED_CODE.test(line)) {
      const body = [];
      while (i < lines.length && (INDENTED_CODE.test(lines[i]) || !lines[i].trim())) {
        body.push(lines[i].replace(INDENTED_CODE, ''));
        i += 1;
      }
      while (body.length && !body[body.length - 1].trim()) body.pop();
      out.push(codeBlock(body.join('\n'), ''));
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_DIVIDER.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      i = table(lines, i, out);
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && (body.length === 0 || !startsBlock(lines[i]))) {
        body.push(lines[i].trim());
        i += 1;
      }
      const paragraph = document.createElement('p');
      body.forEach((text, n) => {
        if (n > 0) paragraph.append(document.createElement('br'));
        paragraph.append(...inline(text));
      });
      out.push(paragraph);
    }
  }
  return out;
}

/** Reads the list starting at `lines[start]` into `out`; returns the index after it. */
function list(lines, start, out) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const listNode = document.createElement(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) listNode.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const match = ITEM.exec(lines[i]);
    if (!match || /\d/.test(match[2]) !== ordered) break;
    const indent = match[0].length;
    const body = [lines[i].slice(indent)];
    i += 1;
    // The item goes on while lines are indented under it (or blank between such lines).
    const dedent = new RegExp(`^ {0,${indent}}`);
    while (i < lines.length) {
      const next = lines[i].replace(/^\t+/, (tabs) => '    '.repeat(tabs.length));
      if (!next.trim()) {
        const following = lines.slice(i + 1).find((l) => l.trim());
        if (following === undefined || !/^\s{2,}/.test(following)) break;
        body.push('');
      } else if (/^\s{2,}/.test(next)) {
        body.push(next.replace(dedent, ''));
      } else if (!startsBlock(next) && body[body.length - 1].trim()) {
        body.push(next); // a lazy continuation of the item's paragraph
      } else {
        break;
      }
      i += 1;
    }
    const item = document.createElement('li');
    const parts = blocks(body);
    // A one-paragraph item shows its text directly, without the paragraph's margins.
    if (parts.length === 1 && parts[0].tagName === 'P') item.append(...parts[0].childNodes);
    else item.append(...parts);
    listNode.append(item);
    // A blank line between two items of the same list keeps the list going.
    let next = i;
    while (next < lines.length && !lines[next].trim()) next += 1;
    const nextItem = next < lines.length && ITEM.exec(lines[next]);
    if (!nextItem || /\d/.test(nextItem[2]) !== ordered) break;
    i = next;
  }
  out.push(listNode);
  return i;
}

function table(lines, start, out) {
  const cells = (line) => line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
  const tableNode = document.createElement('table');
  const head = document.createElement('thead');
  const headRow = document.createElement('tr');
  for (const text of cells(lines[start])) headRow.append(element('th', inline(text)));
  head.append(headRow);
  const body = document.createElement('tbody');
  let i = start + 2;
  while (i < lines.length && lines[i].includes('|') && lines[i].trim()) {
    const row = document.createElement('tr');
    for (const text of cells(lines[i])) row.append(element('td', inline(text)));
    body.append(row);
    i += 1;
  }
  tableNode.append(head, body);
  out.push(element('div', [tableNode], 'table-wrap'));
  return i;
}

function codeBlock(text, language) {
  const pre = document.createElement('pre');
  const code = document.createElement('code');
  code.textContent = text;
  if (/^[\w+#.-]{1,32}$/.test(language)) code.dataset.language = language;
  pre.append(code);
  return pre;
}

function element(tag, children, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children);
  return node;
}

/** An absolute http(s) URL as a string, or null for anything else (javascript:, data:, relative…). */
export function safeUrl(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
}

function link(href, children) {
  const a = document.createElement('a');
  a.href = href;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  a.append(...children);
  return a;
}

const INLINE = new RegExp([
  /\\([\\`*_{}[\]()#+\-.!>~|])/.source, // 1: escaped character
  /(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/.source, // 2, 3: code span
  /\[([^\]\n]+)\]\(\s*<?([^()\s<>]+)>?(?:\s+"[^"\n]*")?\s*\)/.source, // 4, 5: link
  /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 6: bold
  /(?<!\w)__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 7: bold
  /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source, // 8: italic
  /(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/.source, // 9: italic
  /~~(?=\S)([\s\S]*?\S)~~/.source, // 10: strikethrough
  /(https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]])/.source, // 11: bare URL
].join('|'), 'g');

/** Inline Markdown of one block's text as an array of nodes. */
function inline(text, insideLink = false) {
  const nodes = [];
  const pattern = new RegExp(INLINE.source, 'g');
  let last = 0;
  let match;
  while ((match = pattern.exec(text))) {
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    last = pattern.lastIndex;
    const [whole, escaped, , code, linkText, href, bold1, bold2, em1, em2, strike, bare] = match;
    if (escaped !== undefined) {
      nodes.push(document.createTextNode(escaped));
    } else if (code !== undefined) {
      const node = document.createElement('code');
      node.textContent = /^ .* $/.test(code) && code.trim() ? code.slice(1, -1) : code;
      nodes.push(node);
    } else if (linkText !== undefined) {
      const url = insideLink ? null : safeUrl(href);
      nodes.push(...(url ? [link(url, inline(linkText, true))] : inline(linkText, insideLink)));
    } else if (bold1 !== undefined || bold2 !== undefined) {
      nodes.push(element('strong', inline(bold1 ?? bold2, insideLink)));
    } else if (em1 !== undefined || em2 !== undefined) {
      nodes.push(element('em', inline(em1 ?? em2, insideLink)));
    } else if (strike !== undefined) {
      nodes.push(element('del', inline(strike, insideLink)));
    } else if (bare !== undefined) {
      const url = insideLink ? null : safeUrl(bare);
      nodes.push(url ? link(url, [document.createTextNode(bare)]) : document.createTextNode(whole));
    }
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}
