export { run } from '../../preprocess/cli';
