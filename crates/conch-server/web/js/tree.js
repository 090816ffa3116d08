// A conversation's messages form a tree: each has a parent_id (null for the first), and
// siblings — the same parent — are alternatives (regenerated replies, edited messages).

const ROOT = '';

function parentKey(message) {
  return message.parent_id ?? ROOT;
}

function byAge(a, b) {
  return a.created_at - b.created_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export class MessageTree {
  constructor(messages = []) {
    this.byId = new Map();
    this.children = new Map();
    for (const message of messages) this.put(message);
  }

  /** Adds `message`, or replaces the row with its id. */
  put(message) {
    const old = this.byId.get(message.id);
    if (old && parentKey(old) !== parentKey(message)) this.remove(old);
    this.byId.set(message.id, message);
    const key = parentKey(message);
    const siblings = (this.children.get(key) || []).filter((m) => m.id !== message.id);
    // Only one sibling is kept at a time; a newly added or chosen one displaces the others.
    if (message.chosen) for (const sibling of siblings) sibling.chosen = false;
    siblings.push(message);
    siblings.sort(byAge);
    this.children.set(key, siblings);
  }

  remove(message) {
    this.byId.delete(message.id);
    const key = parentKey(message);
    this.children.set(key, (this.children.get(key) || []).filter((m) => m.id !== message.id));
  }

  get(id) {
    return this.byId.get(id);
  }

  /** The alternatives at `message`'s place, itself included, oldest first. */
  siblings(message) {
    return this.children.get(parentKey(message)) || [message];
  }

  /**
   * The branch shown: from the root down, at each level the child picked in `picked`
   * (parent key → message id, the person's paging), else the one marked chosen, else the newest.
   */
  path(picked = new Map()) {
    const path = [];
    let key = ROOT;
    for (;;) {
      const children = this.children.get(key);
      if (!children || children.length === 0) return path;
      const next = children.find((m) => m.id === picked.get(key))
        || children.find((m) => m.chosen)
        || children[children.length - 1];
      path.push(next);
      key = next.id;
    }
  }
}

export { parentKey };
