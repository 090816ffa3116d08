// Display settings kept in this browser: text size and high contrast.

const KEY = 'conch.display';
export const TEXT_SIZES = [
  { value: '100', label: 'Normal' },
  { value: '125', label: 'Large' },
  { value: '150', label: 'Larger' },
  { value: '200', label: 'Largest' },
];

export function loadSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) || '{}');
    return {
      textSize: TEXT_SIZES.some((s) => s.value === saved.textSize) ? saved.textSize : '100',
      highContrast: saved.highContrast === true,
    };
  } catch {
    return { textSize: '100', highContrast: false };
  }
}

export function saveSettings(settings) {
  localStorage.setItem(KEY, JSON.stringify(settings));
  applySettings(settings);
}

/** Sets the root font size (every size in the stylesheet is in rem) and the contrast theme. */
export function applySettings(settings) {
  const root = document.documentElement;
  root.style.fontSize = `${settings.textSize}%`;
  root.classList.toggle('high-contrast', settings.highContrast);
}
